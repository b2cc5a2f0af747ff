//! What the benches share.

/// `iters` runs of `f`, timed on one of rayon's threads: a call from outside the pool
/// would add the pool's wake-up (tens of microseconds) to every run. With
/// `HASS_BENCH_COLD` set, 8 MiB (`HASS_BENCH_COLD_MIB`, if set) are written before each
/// run, so that the layer finds its weights and values outside L2, as it does inside a
/// network (64 MiB: outside a 32 MiB L3 too, from memory).
pub fn on_pool(iters: u64, mut f: impl FnMut() + Send) -> std::time::Duration {
    rayon::scope(move |_| {
        let cold = std::env::var_os("HASS_BENCH_COLD").is_some();
        let mib: usize = std::env::var("HASS_BENCH_COLD_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(8);
        let mut junk = vec![0u8; if cold { mib << 20 } else { 0 }];
        let mut total = std::time::Duration::ZERO;
        for i in 0..iters {
            if cold {
                junk.iter_mut().step_by(64).for_each(|b| *b = b.wrapping_add(i as u8));
            }
            let start = std::time::Instant::now();
            f();
            total += start.elapsed();
        }
        total
    })
}
