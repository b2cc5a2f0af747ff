//! Artifacts: raw container bytes, and (structure-aware) a schedule and a weights section
//! re-wrapped with valid checksums, so mutations reach the protobuf, the loader's checks and
//! the weight encodings. Whatever loads is run and simulated on a small input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fn exercise(bytes: &[u8]) {
    let Ok(plan) = hass_runtime::load_bytes(bytes) else { return };
    let per_image: usize = plan.input_shape.iter().product();
    if per_image > 1 << 16 {
        return;
    }
    let mut shape = vec![1];
    shape.extend_from_slice(&plan.input_shape);
    let input = hass_runtime::Tensor::new(shape, (0..per_image).map(|i| (i % 5) as f32 - 2.0).collect())
        .expect("shape and data agree");
    let _ = hass_runtime::run(&plan, &input);
    let _ = hass_runtime::sim::simulate(&plan, &input);
}

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        // Structure-aware: the first byte says where the schedule ends and the weights begin.
        Some((&cut, rest)) if cut & 1 == 1 => {
            let at = rest.len() * (cut as usize >> 1) / 128;
            let (schedule, weights) = rest.split_at(at.min(rest.len()));
            if let Ok(s) = <hass_proto::Schedule as prost::Message>::decode(schedule) {
                exercise(&hass_proto::encode(&s, weights));
            }
        }
        _ => exercise(data),
    }
});
