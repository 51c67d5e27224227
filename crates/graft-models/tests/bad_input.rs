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

/// A GGUF file of `metadata` and F32 `tensors` (name, shape).
fn write_gguf(
    path: &std::path::Path,
    metadata: &[(&str, candle_core::quantized::gguf_file::Value)],
    tensors: &[(&str, Vec<usize>)],
) {
    use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
    let qs: Vec<(&str, QTensor)> = tensors
        .iter()
        .map(|(n, shape)| {
            let t = candle_core::Tensor::zeros(shape.as_slice(), DType::F32, &Device::Cpu).unwrap();
            (*n, QTensor::quantize(&t, GgmlDType::F32).unwrap())
        })
        .collect();
    let md: Vec<(&str, &gguf_file::Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    let ts: Vec<(&str, &QTensor)> = qs.iter().map(|(n, q)| (*n, q)).collect();
    let mut file = std::fs::File::create(path).unwrap();
    gguf_file::write(&mut file, &md, &ts).unwrap();
}

#[test]
fn gguf_headers_that_would_panic_are_errors() {
    use candle_core::quantized::gguf_file::Value;
    let dir = tempfile::tempdir().unwrap();
    let llama = |extra: Vec<(&'static str, Value)>| {
        let mut md = vec![
            ("general.architecture", Value::String("llama".into())),
            ("llama.attention.head_count", Value::U32(2)),
            ("llama.embedding_length", Value::U32(4)),
        ];
        md.extend(extra);
        md
    };
    // candle's reader divides by `general.alignment`: 0 is a file error, not a panic.
    let path = dir.path().join("align0.gguf");
    write_gguf(
        &path,
        &llama(vec![("general.alignment", Value::U32(0))]),
        &[("token_embd.weight", vec![3, 4])],
    );
    let e = open_err(&path);
    assert!(e.contains("align0.gguf") && e.contains("GGUF"), "{e}");
    // A token embedding that is not a (vocab, hidden) matrix.
    for (name, shape) in [("embd_1d.gguf", vec![4]), ("embd_empty.gguf", vec![0, 4])] {
        let path = dir.path().join(name);
        write_gguf(&path, &llama(vec![]), &[("token_embd.weight", shape)]);
        let e = open_err(&path);
        assert!(e.contains(name) && e.contains("token_embd.weight"), "{e}");
    }
}

#[test]
fn index_shards_stay_inside_the_model_folder() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(fixture("models/llama").join(f), dir.path().join(f)).unwrap();
    }
    for shard in [
        "../model.safetensors",
        "/tmp/model.safetensors",
        "a/../../b.safetensors",
    ] {
        let index = serde_json::json!({"weight_map": {"model.embed_tokens.weight": shard}});
        std::fs::write(
            dir.path().join("model.safetensors.index.json"),
            index.to_string(),
        )
        .unwrap();
        let e = open_err(dir.path());
        assert!(
            e.contains("weight_map") && e.contains(shard),
            "{shard}: {e}"
        );
    }
}
