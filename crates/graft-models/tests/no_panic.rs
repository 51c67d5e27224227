//! Property tests: damaged model files (truncated, bytes changed) are errors, never panics
//! (graft_testkit::assert_no_panic). GGUF, safetensors, a safetensors index, config.json and
//! tokenizer.json, each through the loader users reach.

use std::path::Path;

use candle_core::{DType, Device};
use graft_models::ModelSource;
use graft_testkit::{assert_no_panic, fixture};

fn load(path: &Path) -> Result<(), String> {
    let source = ModelSource::open(path, DType::F32, &Device::Cpu).map_err(|e| e.to_string())?;
    source
        .build_model(DType::F32, &Device::Cpu)
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// A copy of the llama fixture folder in which `file` is replaced by each damaged version.
fn in_model_dir(file: &'static str) -> (tempfile::TempDir, impl Fn(&Path) -> Result<(), String>) {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    std::fs::create_dir(&model).unwrap();
    for e in std::fs::read_dir(fixture("models/llama"))
        .unwrap()
        .flatten()
    {
        std::fs::copy(e.path(), model.join(e.file_name())).unwrap();
    }
    let check = move |damaged: &Path| {
        std::fs::copy(damaged, model.join(file)).unwrap();
        load(&model)
    };
    (dir, check)
}

#[test]
fn damaged_gguf_files_are_errors() {
    let bytes = std::fs::read(fixture("models/llama.gguf")).unwrap();
    assert_no_panic("llama.gguf", &bytes, 400, load);
}

#[test]
fn damaged_safetensors_config_and_tokenizer_files_are_errors() {
    for file in [
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        let bytes = std::fs::read(fixture("models/llama").join(file)).unwrap();
        let (_dir, check) = in_model_dir(file);
        assert_no_panic(file, &bytes, 300, check);
    }
}

#[test]
fn damaged_safetensors_indexes_are_errors() {
    let (dir, check) = in_model_dir("model.safetensors.index.json");
    let model = dir.path().join("model");
    std::fs::rename(
        model.join("model.safetensors"),
        model.join("shard-1.safetensors"),
    )
    .unwrap();
    let tensors =
        candle_core::safetensors::load(model.join("shard-1.safetensors"), &Device::Cpu).unwrap();
    let map: serde_json::Map<String, serde_json::Value> = tensors
        .keys()
        .map(|k| (k.clone(), "shard-1.safetensors".into()))
        .collect();
    let index = serde_json::json!({"metadata": {}, "weight_map": map}).to_string();
    std::fs::write(model.join("model.safetensors.index.json"), &index).unwrap();
    load(&model).unwrap();
    assert_no_panic("model.safetensors.index.json", index.as_bytes(), 300, check);
}
