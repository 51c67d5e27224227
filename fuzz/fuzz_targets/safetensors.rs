#![no_main]
//! An HF model folder: config.json, model.safetensors and model.safetensors.index.json from one
//! input (split at 0xff 0x00 0xff), through the loader and the merge reader.
use candle_core::{DType, Device};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = graft_fuzz::scratch().join("model");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let p = graft_fuzz::parts(data, 3);
    std::fs::write(dir.join("config.json"), p[0]).unwrap();
    std::fs::write(dir.join("model.safetensors"), p[1]).unwrap();
    if !p[2].is_empty() {
        std::fs::write(dir.join("model.safetensors.index.json"), p[2]).unwrap();
    }
    if let Ok(source) = graft_models::ModelSource::open(&dir, DType::F32, &Device::Cpu) {
        let _ = source.build_model(DType::F32, &Device::Cpu);
    }
    if let Ok(files) = graft_merge::io::ModelFiles::open(&dir) {
        let names: Vec<String> = files.names().cloned().collect();
        for n in names {
            let _ = files.read(&n);
        }
    }
});
