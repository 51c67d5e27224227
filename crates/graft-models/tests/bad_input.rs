//! Bad model paths give one error naming the file and the problem, never a panic.

use std::path::Path;

use candle_core::{DType, Device};
use graft_models::ModelSource;
use graft_testkit::fixture;

fn open_err(path: &Path) -> String {
    match ModelSource::open(path, DType::F32, &Device::Cpu)
        .and_then(|s| s.build(DType::F32, &Device::Cpu).map(|_| ()))
    {
        Ok(()) => panic!("{} opened without error", path.display()),
        Err(e) => e.to_string(),
    }
}

/// A copy of the tiny llama fixture to damage.
fn copy_llama() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture("models/llama")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    dir
}

#[test]
fn missing_path() {
    let e = open_err(Path::new("/nonexistent/model"));
    assert!(
        e.contains("/nonexistent/model") && e.contains("no such file"),
        "{e}"
    );
}

#[test]
fn missing_config() {
    let dir = copy_llama();
    std::fs::remove_file(dir.path().join("config.json")).unwrap();
    let e = open_err(dir.path());
    assert!(e.contains("config.json") && e.contains("missing"), "{e}");
}

#[test]
fn corrupt_config() {
    let dir = copy_llama();
    std::fs::write(
        dir.path().join("config.json"),
        "{\"model_type\": \"llama\", ",
    )
    .unwrap();
    let e = open_err(dir.path());
    assert!(
        e.contains("config.json") && e.contains("invalid JSON"),
        "{e}"
    );
}

#[test]
fn config_missing_a_field() {
    let dir = copy_llama();
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap())
            .unwrap();
    cfg.as_object_mut().unwrap().remove("hidden_size");
    std::fs::write(dir.path().join("config.json"), cfg.to_string()).unwrap();
    let e = open_err(dir.path());
    assert!(
        e.contains("config.json") && e.contains("hidden_size"),
        "{e}"
    );
}

#[test]
fn unknown_architecture() {
    let dir = copy_llama();
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"model_type": "bert", "architectures": ["BertModel"]}"#,
    )
    .unwrap();
    let e = open_err(dir.path());
    assert!(
        e.contains("unknown architecture `bert`") && e.contains("llama"),
        "{e}"
    );
}

#[test]
fn truncated_safetensors() {
    let dir = copy_llama();
    let path = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let e = open_err(dir.path());
    assert!(e.contains("model.safetensors"), "{e}");
}

#[test]
fn garbage_safetensors() {
    let dir = copy_llama();
    std::fs::write(
        dir.path().join("model.safetensors"),
        b"\xff\xff\xff\xff\xff\xff\xff\x7fnot a header",
    )
    .unwrap();
    let e = open_err(dir.path());
    assert!(e.contains("model.safetensors"), "{e}");
}

#[test]
fn shape_mismatch() {
    let dir = copy_llama();
    let path = dir.path().join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    cfg["intermediate_size"] = serde_json::json!(50);
    std::fs::write(&path, cfg.to_string()).unwrap();
    let e = open_err(dir.path());
    assert!(
        e.contains("weights do not fit config") && e.contains("mlp"),
        "{e}"
    );
}

#[test]
fn missing_tokenizer_is_reported_when_needed() {
    let dir = copy_llama();
    std::fs::remove_file(dir.path().join("tokenizer.json")).unwrap();
    let source = ModelSource::open(dir.path(), DType::F32, &Device::Cpu).unwrap();
    let e = source.tokenizer().err().unwrap().to_string();
    assert!(e.contains("tokenizer.json") && e.contains("missing"), "{e}");
}

#[test]
fn corrupt_and_truncated_gguf() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.gguf");
    std::fs::write(&garbage, b"GGUF but not really").unwrap();
    let e = open_err(&garbage);
    assert!(e.contains("garbage.gguf") && e.contains("GGUF"), "{e}");

    let real = std::fs::read(fixture("models/llama.gguf")).unwrap();
    for cut in [real.len() / 3, real.len() - 16] {
        let truncated = dir.path().join("truncated.gguf");
        std::fs::write(&truncated, &real[..cut]).unwrap();
        let e = open_err(&truncated);
        assert!(e.contains("truncated.gguf"), "{e}");
    }
}
