#![no_main]
//! A GGUF file through the model loader (header walk, candle's reader, config and tokenizer
//! rebuilt from metadata, tensors dequantized).
use candle_core::{DType, Device};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = graft_fuzz::file("m.gguf", data);
    if let Ok(source) = graft_models::ModelSource::open(&path, DType::F32, &Device::Cpu) {
        let _ = source.build_model(DType::F32, &Device::Cpu);
    }
});
