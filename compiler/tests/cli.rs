//! The `hassc` command line as a user meets it: outputs, defaults, and every bad input
//! giving a one-line error, a non-zero exit and no output file.

mod common;

use common::{assert_fails, hassc, testdata};
use std::path::Path;

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

#[test]
fn compiles_next_to_the_model_by_default_and_deterministically() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("cnn.onnx");
    std::fs::copy(testdata("models/fmnist_cnn_op13.onnx"), &model).unwrap();
    let out = hassc(&[model.to_str().unwrap(), "--target", "zcu102"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let first = std::fs::read(dir.path().join("cnn.hass")).unwrap();
    let explicit = dir.path().join("again.hass");
    let out = hassc(&[model.to_str().unwrap(), "--target", "zcu102", "-o", explicit.to_str().unwrap(), "-q"]);
    assert!(out.status.success() && out.stdout.is_empty());
    assert_eq!(first, std::fs::read(&explicit).unwrap(), "same inputs must give the same bytes");
    assert_eq!(files_in(dir.path()), ["again.hass", "cnn.hass", "cnn.onnx"]);
}

#[test]
fn board_file_path_works_like_a_builtin_name() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.hass"), dir.path().join("b.hass"));
    let model = testdata("models/fmnist_cnn_op13.onnx");
    assert!(hassc(&[model.to_str().unwrap(), "--target", "zcu102", "-o", a.to_str().unwrap()]).status.success());
    let board = testdata("boards/zcu102.toml");
    assert!(hassc(&[model.to_str().unwrap(), "--target", board.to_str().unwrap(), "-o", b.to_str().unwrap()])
        .status
        .success());
    assert_eq!(std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
}

#[test]
fn unsupported_ops_are_all_listed_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("lstm.hass");
    let out = hassc(&[
        testdata("models/invalid/lstm.onnx").to_str().unwrap(),
        "--target",
        "u250",
        "-o",
        out_file.to_str().unwrap(),
    ]);
    assert_fails(&out, &["2 unsupported node(s)", "encoder_lstm (LSTM)", "squeeze_dirs (Squeeze)"]);
    assert!(files_in(dir.path()).is_empty());
}

#[test]
fn truncated_onnx_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(testdata("models/fmnist_resnet_op13.onnx")).unwrap();
    let model = dir.path().join("cut.onnx");
    std::fs::write(&model, &bytes[..bytes.len() / 2]).unwrap();
    let out = hassc(&[model.to_str().unwrap(), "--target", "u250"]);
    assert_fails(&out, &["cut.onnx", "not a valid ONNX model"]);
    assert_eq!(files_in(dir.path()), ["cut.onnx"]);
}

#[test]
fn missing_model_file_is_named() {
    let out = hassc(&["/nonexistent/model.onnx", "--target", "u250"]);
    assert_fails(&out, &["/nonexistent/model.onnx", "No such file"]);
    assert_eq!(String::from_utf8_lossy(&out.stderr).matches("No such file").count(), 1, "said once");
}

#[test]
fn bad_boards_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let model = testdata("models/fmnist_cnn_op13.onnx");
    let good = std::fs::read_to_string(testdata("boards/zcu102.toml")).unwrap();
    let cases = [
        ("missing.toml", good.replace("lut = 274080\n", ""), "missing field `lut`"),
        ("unknown.toml", good.replace("[system]", "[system]\nclock_ghz = 1.0"), "unknown field `clock_ghz`"),
        ("negative.toml", good.replace("dsp = 2520", "dsp = -1"), "`dsp = -1`"),
    ];
    for (file, text, needle) in cases {
        let path = dir.path().join(file);
        std::fs::write(&path, text).unwrap();
        let out = hassc(&[
            model.to_str().unwrap(),
            "--target",
            path.to_str().unwrap(),
            "-o",
            dir.path().join("x.hass").to_str().unwrap(),
        ]);
        assert_fails(&out, &[file, needle]);
    }
    assert_fails(&hassc(&[model.to_str().unwrap(), "--target", "u999"]), &["unknown board \"u999\"", "u250"]);
    assert!(!dir.path().join("x.hass").exists());
}

#[test]
fn inspect_json_has_the_documented_fields() {
    let out = hassc(&["inspect", testdata("models/fmnist_cnn_op13.onnx").to_str().unwrap(), "--json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let layers = v["layers"].as_array().unwrap();
    // Conv+BN+ReLU twice, MaxPool twice, Flatten, Gemm: BN and ReLU fold and fuse away.
    let ops: Vec<&str> = layers.iter().map(|l| l["op"].as_str().unwrap()).collect();
    assert_eq!(ops, ["Conv+relu", "MaxPool", "Conv+relu", "MaxPool", "Reshape", "Dense"]);
    // 28*28*16*9 + 14*14*32*16*9 + 1568*10 MACs.
    assert_eq!(v["total_macs"], 28 * 28 * 16 * 9 + 14 * 14 * 32 * 16 * 9 + 1568 * 10);
    let params: u64 = layers.iter().map(|l| l["params"].as_u64().unwrap()).sum();
    assert_eq!(v["total_params"].as_u64().unwrap(), params);
    for l in layers {
        for key in ["name", "op", "input_shape", "output_shape", "params", "macs"] {
            assert!(l.get(key).is_some(), "layer lacks {key}: {l}");
        }
    }
}

#[test]
fn inspect_writes_a_dot_graph_and_prints_a_table() {
    let dir = tempfile::tempdir().unwrap();
    let dot = dir.path().join("g.dot");
    let out = hassc(&[
        "inspect",
        testdata("models/fmnist_resnet_op18.onnx").to_str().unwrap(),
        "--dot",
        dot.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.lines().last().unwrap().starts_with("total: "), "{table}");
    let text = std::fs::read_to_string(dot).unwrap();
    assert!(text.starts_with("digraph") && text.matches("->").count() >= 10, "{text}");
}

#[test]
fn inspect_after_a_pass_prints_the_ir_as_it_stands_then() {
    let model = testdata("models/fmnist_cnn_op13.onnx");
    let ir_after = |pass: &str| {
        let out = hassc(&["inspect", model.to_str().unwrap(), "--after", pass]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let imported = ir_after("import");
    assert!(imported.starts_with("graph fmnist_cnn_op13 {"), "{imported}");
    assert!(imported.contains("batchnormalization") || imported.contains("scale_shift"), "{imported}");
    assert!(imported.contains(": ?"), "no shapes before infer_shapes: {imported}");
    let shaped = ir_after("infer_shapes");
    assert!(!shaped.contains(": ?"), "{shaped}");
    let fused = ir_after("fuse_activation");
    // BatchNorm folded and ReLU fused: fewer nodes, and the conv carries its activation.
    assert!(fused.lines().count() < shaped.lines().count(), "{shaped}\n---\n{fused}");
    assert!(fused.lines().any(|l| l.contains("= conv ") && l.contains(", relu :")), "{fused}");
    assert!(!fused.contains("scale_shift"), "{fused}");
    // The last stop is what the backend sees.
    assert_eq!(fused, ir_after("fuse_activation"), "deterministic");

    let out = hassc(&["inspect", model.to_str().unwrap(), "--after", "fold_bn"]);
    assert_fails(&out, &["no pass named \"fold_bn\"", "import, infer_shapes", "fuse_activation"]);
    let artifact = testdata("artifacts/fmnist_cnn_op13.v2.hass");
    let out = hassc(&["inspect", artifact.to_str().unwrap(), "--after", "import"]);
    assert_fails(&out, &["--after shows the IR of an ONNX model", "is an artifact"]);
}

#[test]
fn outputs_never_replace_inputs_devices_or_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.onnx");
    std::fs::copy(testdata("models/fmnist_cnn_op13.onnx"), &model).unwrap();
    let original = std::fs::read(&model).unwrap();
    let m = model.to_str().unwrap();
    // The model itself, through another spelling, and through a symbolic link.
    let alias = dir.path().join("alias.hass");
    std::os::unix::fs::symlink(&model, &alias).unwrap();
    let dotted = format!("{}/./m.onnx", dir.path().display());
    for out in [m, dotted.as_str(), alias.to_str().unwrap()] {
        assert_fails(&hassc(&[m, "--target", "zcu102", "-o", out]), &["is also an input", "m.onnx"]);
    }
    let report = dir.path().join("r.json");
    assert_fails(&hassc(&[m, "--target", "zcu102", "--report", m]), &["is also an input"]);
    let same = hassc(&[m, "--target", "zcu102", "-o", report.to_str().unwrap(), "--report", report.to_str().unwrap()]);
    assert_fails(&same, &["named for two outputs"]);
    assert_eq!(std::fs::read(&model).unwrap(), original, "the model is untouched");
    assert_eq!(files_in(dir.path()), ["alias.hass", "m.onnx"]);
    // A device stays a device; a link is written through.
    let out = hassc(&[m, "--target", "zcu102", "-o", "/dev/null", "-q"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::metadata("/dev/null").unwrap().file_type().is_char_device());
    let link = dir.path().join("link.hass");
    std::os::unix::fs::symlink("real.hass", &link).unwrap();
    assert!(hassc(&[m, "--target", "zcu102", "-o", link.to_str().unwrap(), "-q"]).status.success());
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    assert!(std::fs::read(dir.path().join("real.hass")).unwrap().starts_with(b"HASSART"));
}

#[test]
fn an_interrupted_compile_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.hass");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_hassc"))
        .args([testdata("models/fmnist_resnet_op13.onnx").to_str().unwrap(), "--target", "zcu102", "-q"])
        .args(["--calib", testdata("inputs/fmnist_train_500.npy").to_str().unwrap(), "-o", out.to_str().unwrap()])
        .arg("--report")
        .arg(dir.path().join("r.json"))
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let status = child.wait().unwrap();
    assert!(!status.success(), "the search takes longer than 1.5 s and was stopped");
    assert_eq!(files_in(dir.path()), Vec::<String>::new());
}

#[test]
fn boards_lists_and_shows_builtins() {
    let out = hassc(&["boards"]);
    let text = String::from_utf8(out.stdout).unwrap();
    for name in ["u250", "u200", "vcu1525", "zcu102", "zcu104", "vc709"] {
        assert!(text.contains(name), "{text}");
    }
    let shown = hassc(&["boards", "show", "zcu102"]);
    assert_eq!(
        String::from_utf8(shown.stdout).unwrap(),
        std::fs::read_to_string(testdata("boards/zcu102.toml")).unwrap()
    );
    assert_fails(&hassc(&["boards", "show", "nope"]), &["nope"]);
}

/// A reader that stops reading (`hassc ... | head -1`) is no error of hassc's: the
/// artifact is still written and the exit is clean, without a panic.
#[test]
fn a_closed_standard_output_still_writes_the_artifact() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.hass");
    // A pipe whose reading end is closed before hassc starts: its first line fails.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let model = testdata("models/fmnist_cnn_op13.onnx");
    let res = std::process::Command::new(env!("CARGO_BIN_EXE_hassc"))
        .args([model.to_str().unwrap(), "--target", "zcu102", "-o", out.to_str().unwrap()])
        .stdout(writer)
        .output()
        .expect("hassc runs");
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(res.status.success(), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(hass_runtime::load_file(&out).is_ok());
}

/// Compile the bundled CNN on zcu102 with the bundled calibration images and `extra`
/// options into `dir`; returns the report, after checking that hassc succeeded.
fn compile_calibrated(dir: &std::path::Path, extra: &[&str]) -> serde_json::Value {
    let (out, report) = (dir.join("m.hass"), dir.join("r.json"));
    let model = testdata("models/fmnist_cnn_op13.onnx");
    let calib = testdata("inputs/fmnist_train_500.npy");
    let mut args = vec![model.to_str().unwrap(), "--target", "zcu102", "-q", "-o", out.to_str().unwrap()];
    args.extend_from_slice(&["--report", report.to_str().unwrap(), "--calib", calib.to_str().unwrap()]);
    args.extend_from_slice(extra);
    let result = hassc(&args);
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap()
}

#[test]
fn search_writes_the_pareto_front_and_a_search_report() {
    let dir = tempfile::tempdir().unwrap();
    let pareto = dir.path().join("front.json");
    let labels = testdata("inputs/fmnist_train_500_labels.npy");
    let r =
        compile_calibrated(dir.path(), &["--labels", labels.to_str().unwrap(), "--pareto", pareto.to_str().unwrap()]);
    let search = &r["search"];
    assert_eq!(search["strategy"], "hass");
    assert_eq!(search["calibration_images"], 500);
    assert!(search["final"]["throughput_fps"].as_f64().unwrap() > search["dense"]["throughput_fps"].as_f64().unwrap());
    assert_eq!(search["final"]["throughput_fps"], r["throughput_fps"]);
    let front: serde_json::Value = serde_json::from_slice(&std::fs::read(&pareto).unwrap()).unwrap();
    let points = front["points"].as_array().unwrap();
    assert_eq!(points.len() as u64, search["evaluations"].as_u64().unwrap() + 1);
    assert_eq!(points.iter().filter(|p| p["chosen"] == true).count(), 1);
    // The chosen point carries the report's figure, and the front says what it measured.
    let chosen = points.iter().find(|p| p["chosen"] == true).unwrap();
    assert_eq!(chosen["reported_throughput_fps"], r["throughput_fps"]);
    assert!(front["throughput"].as_str().unwrap().contains("statistics on 96 of 500 calibration images"));
    let svg = std::fs::read_to_string(dir.path().join("front.svg")).unwrap();
    let label = format!("chosen: {:.0} images/s (as reported)", r["throughput_fps"].as_f64().unwrap());
    assert!(svg.starts_with("<svg") && svg.contains(&label), "{label}");
}

#[test]
fn a_sparsity_config_turns_the_search_off_even_when_it_sets_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(&config, "").unwrap();
    let r = compile_calibrated(dir.path(), &["--sparsity-config", config.to_str().unwrap()]);
    assert!(r.get("search").is_none_or(|s| s.is_null()), "{}", r["search"]);
    assert_eq!(r["sparsity_source"], "measured on 500 calibration images");
}

#[test]
fn search_input_errors_are_one_line_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.hass");
    let model = testdata("models/fmnist_cnn_op13.onnx");
    let calib = testdata("inputs/fmnist_train_500.npy");
    let base = |extra: &[&str]| {
        let mut args = vec![model.to_str().unwrap(), "--target", "zcu102", "-o", out.to_str().unwrap()];
        args.extend_from_slice(&["--calib", calib.to_str().unwrap()]);
        args.extend_from_slice(extra);
        hassc(&args)
    };
    let test_labels = testdata("inputs/fmnist_test_1000_labels.npy");
    assert_fails(&base(&["--labels", test_labels.to_str().unwrap()]), &["1000 labels for 500 calibration images"]);
    let images = testdata("inputs/fmnist_test_1000.npy");
    assert_fails(&base(&["--labels", images.to_str().unwrap()]), &["fmnist_test_1000.npy", "1-D array of class"]);
    assert_fails(&base(&["--search", "hass", "--weight-sparsity", "0.5"]), &["chooses the thresholds itself"]);
    // A search needs calibration images; `--search none` does not.
    let bare = |extra: &[&str]| {
        let mut args = vec![model.to_str().unwrap(), "--target", "zcu102", "-o", out.to_str().unwrap(), "-q"];
        args.extend_from_slice(extra);
        hassc(&args)
    };
    for search in ["global-greedy", "uniform"] {
        let needs = bare(&["--search", search]);
        assert!(
            !needs.status.success() && String::from_utf8_lossy(&needs.stderr).contains("--calib <X.npy>"),
            "{search}"
        );
    }
    let needs = bare(&["--reconstruct", "on"]);
    assert!(!needs.status.success() && String::from_utf8_lossy(&needs.stderr).contains("--calib <X.npy>"));
    assert_fails(&base(&["--max-accuracy-drop=-1"]), &["--max-accuracy-drop"]);
    // A bare negative number is the flag's value, refused as such.
    assert_fails(&base(&["--max-accuracy-drop", "-1"]), &["--max-accuracy-drop must be between 0 and 100", "-1"]);
    assert_fails(&base(&["--time-budget", "0"]), &["--time-budget"]);
    assert_fails(&base(&["--time-budget", "1e20"]), &["--time-budget", "at most 1e9"]);
    assert_fails(&base(&["--time-budget", "NaN"]), &["--time-budget"]);
    assert_fails(&base(&["--max-evaluations", "0"]), &["--max-evaluations"]);
    assert_eq!(files_in(dir.path()), Vec::<String>::new());
    // Labels belong to the search, which needs calibration images.
    let out = hassc(&[model.to_str().unwrap(), "--target", "zcu102", "--labels", test_labels.to_str().unwrap()]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--calib"));
    assert!(bare(&["--search", "none"]).status.success(), "--search none needs no calibration images");
}

/// The datapath as users see it: each layer's formats and accumulator in the JSON report and
/// in `inspect`, the agreement with float on the calibration images, and nothing of it for
/// `--datapath float`; the weights section shrinks with the width.
#[test]
fn widths_set_per_layer_reach_the_artifact_and_the_hardware_model() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("widths.toml");
    // c1 writes 8-bit values and c2 has 8-bit weights: c2 multiplies 8 by 8 bits.
    std::fs::write(
        &config,
        "[layers.\"/c1/c1.0/Conv\"]\nactivation_bits = 8\n[layers.\"/c2/c2.0/Conv\"]\nweight_bits = 8\n",
    )
    .unwrap();
    let (artifact, report) = (dir.path().join("w.hass"), dir.path().join("w.json"));
    let model = testdata("models/fmnist_cnn_op13.onnx");
    let out = hassc(&[
        model.to_str().unwrap(),
        "--target",
        "zcu102",
        "--sparsity-config",
        config.to_str().unwrap(),
        "-o",
        artifact.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 layer(s) at their own widths"));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let datapath = r["datapath"]["layers"].as_array().unwrap();
    let by_name = |name: &str| datapath.iter().find(|l| l["name"] == name).unwrap().clone();
    assert_eq!(by_name("/c1/c1.0/Conv")["output"]["bits"], 8);
    // A ReLU's output: 8 bits of magnitude, in a 9-bit signed format in the artifact; at 16
    // bits (c2's) the runtime's integers keep the sign bit.
    assert_eq!(by_name("/c1/c1.0/Conv")["output"]["unsigned"], true);
    assert!(by_name("/c2/c2.0/Conv")["output"].get("unsigned").is_none());
    let schedule = hass_proto::open(&std::fs::read(&artifact).unwrap()).unwrap().schedule;
    let c1 = schedule.layers.iter().find(|l| l.name == "/c1/c1.0/Conv").unwrap().fixed.clone().unwrap();
    assert_eq!((c1.output.unwrap().bits, c1.unsigned_output), (9, true));
    assert_eq!(by_name("/c1/c1.0/Conv")["weight_bits"], 16);
    assert_eq!(by_name("/c2/c2.0/Conv")["weight_bits"], 8);
    assert_eq!(by_name("/c2/c2.0/Conv")["output"]["bits"], 16);
    assert_eq!(by_name("/fc/Gemm")["weight_bits"], 16);
    let c2 = r["layers"].as_array().unwrap().iter().find(|l| l["name"] == "/c2/c2.0/Conv").unwrap();
    let mults: f64 = ["coarse_in", "coarse_out", "coarse_group", "fine", "spatial"]
        .iter()
        .map(|k| c2[k].as_f64().unwrap())
        .product();
    assert_eq!(c2["dsp"].as_f64().unwrap(), (mults / 2.0).ceil(), "two 8-bit multiplies per DSP: {c2}");
    // The runtime reads it.
    hass_runtime::load_bytes(&std::fs::read(&artifact).unwrap()).unwrap();

    // A file that sets only widths leaves the sparsity search on, at those widths.
    let calib = testdata("inputs/fmnist_train_500.npy");
    let searched = dir.path().join("s.json");
    let out = hassc(&[
        model.to_str().unwrap(),
        "--target",
        "zcu102",
        "-q",
        "--sparsity-config",
        config.to_str().unwrap(),
        "--calib",
        calib.to_str().unwrap(),
        "--max-evaluations",
        "2",
        "-o",
        dir.path().join("s.hass").to_str().unwrap(),
        "--report",
        searched.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&searched).unwrap()).unwrap();
    assert_eq!(r["search"]["strategy"], "hass");
    assert_eq!(
        (r["search"]["stopped"].as_str(), r["search"]["evaluations"].as_u64()),
        (Some("evaluation-budget"), Some(2))
    );
    let c2 = r["datapath"]["layers"].as_array().unwrap().iter().find(|l| l["name"] == "/c2/c2.0/Conv").unwrap().clone();
    assert_eq!(c2["weight_bits"], 8);

    // A width on a layer the model does not have is an error that lists the names.
    std::fs::write(&config, "[layers.\"/c9/Conv\"]\nweight_bits = 8\n").unwrap();
    let out = hassc(&[model.to_str().unwrap(), "--target", "zcu102", "--sparsity-config", config.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("/c9/Conv") && err.contains("/fc/Gemm"), "{err}");
}

#[test]
fn fixed_point_formats_are_reported_and_weights_shrink_with_the_width() {
    let dir = tempfile::tempdir().unwrap();
    let model = testdata("models/fmnist_cnn_op13.onnx");
    let calib = testdata("inputs/fmnist_train_500.npy");
    let compile = |name: &str, extra: &[&str]| {
        let (artifact, report) = (dir.path().join(format!("{name}.hass")), dir.path().join(format!("{name}.json")));
        let mut args = vec![model.to_str().unwrap(), "--target", "zcu102", "-q", "-o", artifact.to_str().unwrap()];
        args.extend(["--report", report.to_str().unwrap()]);
        args.extend(extra);
        let out = hassc(&args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        (std::fs::metadata(&artifact).unwrap().len(), json, artifact)
    };
    let eight =
        ["--calib", calib.to_str().unwrap(), "--search", "none", "--weight-bits", "8", "--activation-bits", "8"];
    let (bytes8, r, artifact) = compile("b8", &eight);
    let d = &r["datapath"];
    assert!(d["top1_agreement_with_float"].as_f64().unwrap() >= 95.0, "{d}");
    let layers = d["layers"].as_array().unwrap();
    assert_eq!(layers.len(), r["layers"].as_array().unwrap().len());
    // The first conv reads one channel through a 3x3 window: 8 + 8 + ceil(log2 9) bits.
    assert_eq!(layers[0]["accumulator_bits"], 20, "{}", layers[0]);
    assert_eq!(layers[0]["output"]["bits"], 8);
    let inspect = hassc(&["inspect", artifact.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&inspect.stdout).contains("fixed<8,"));

    // Pruned, the formats come from the dense model's ranges; the agreement is still
    // measured, against the pruned model's float outputs.
    let pruned: Vec<&str> = eight.iter().copied().chain(["--weight-sparsity", "0.5"]).collect();
    let (_, pruned, _) = compile("pruned8", &pruned);
    let agreement = pruned["datapath"]["top1_agreement_with_float"].as_f64().unwrap();
    assert!((90.0..=100.0).contains(&agreement), "{}", pruned["datapath"]);
    let (bytes16, r16, _) = compile("b16", &[]);
    assert!(r16["datapath"]["top1_agreement_with_float"].is_null(), "no --calib, no agreement");
    let (bytes_float, float, _) = compile("float", &["--datapath", "float"]);
    assert!(float["datapath"].is_null());
    // Whole artifacts (the weights dominate): 16 bits about half of float32, 8 a quarter.
    assert!(bytes16 * 100 <= 55 * bytes_float && bytes8 * 100 <= 30 * bytes_float, "{bytes16} {bytes8} {bytes_float}");
}
