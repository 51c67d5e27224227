//! Reading input models tensor by tensor from safetensors files (one file or a sharded index) by
//! positional reads — not a memory map, whose touched pages would stay in the process's resident
//! set for the whole merge — and writing the output as it is computed: each shard's header is known from the plan
//! before any tensor is merged, so tensors stream to disk one at a time and memory holds one
//! tensor group, not the model.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::Dtype;
use serde_json::{json, Value};
use std::os::unix::fs::FileExt;

/// An input model: `config.json` and its tensors by name.
pub struct ModelFiles {
    pub dir: PathBuf,
    /// `config.json` (or a PEFT adapter's `adapter_config.json`).
    pub config: Value,
    /// A PEFT adapter folder: its tensors merge like any others; the output is an adapter.
    pub adapter: bool,
    files: Vec<(PathBuf, std::fs::File)>,
    /// name → (file, dtype, shape, byte range in the file); file `MEMORY` for `memory`.
    tensors: HashMap<String, (usize, Dtype, Vec<usize>, std::ops::Range<usize>)>,
    /// Tensors materialised in memory (dequantized GGUF, base + merged LoRA).
    memory: HashMap<String, Vec<f32>>,
    /// Tokenizer files of an in-memory model (name, contents), written with the output.
    pub tokenizer_files: Vec<(String, String)>,
}

const MEMORY: usize = usize::MAX;

fn err(path: &Path, e: impl std::fmt::Display) -> String {
    format!("{}: {e}", path.display())
}

impl ModelFiles {
    /// Tensors already in memory, with their config and tokenizer files.
    pub fn in_memory(
        dir: &Path,
        config: Value,
        tensors: HashMap<String, (Vec<f32>, Vec<usize>)>,
        tokenizer_files: Vec<(String, String)>,
    ) -> Self {
        let mut index = HashMap::new();
        let mut memory = HashMap::new();
        for (name, (values, shape)) in tensors {
            index.insert(name.clone(), (MEMORY, Dtype::F32, shape, 0..0));
            memory.insert(name, values);
        }
        Self {
            dir: dir.to_path_buf(),
            config,
            adapter: false,
            files: Vec::new(),
            tensors: index,
            memory,
            tokenizer_files,
        }
    }

    pub fn open(dir: &Path) -> Result<Self, String> {
        if dir.join("adapter_config.json").exists() && !dir.join("config.json").exists() {
            return Self::open_adapter(dir);
        }
        if !dir.is_dir() {
            return Err(err(
                dir,
                "not a model directory (graft merge reads local HF directories)",
            ));
        }
        let cfg_path = dir.join("config.json");
        let config: Value = serde_json::from_str(
            &std::fs::read_to_string(&cfg_path).map_err(|e| err(&cfg_path, e))?,
        )
        .map_err(|e| err(&cfg_path, e))?;
        let index = dir.join("model.safetensors.index.json");
        let files: Vec<PathBuf> = if index.exists() {
            let v: Value =
                serde_json::from_str(&std::fs::read_to_string(&index).map_err(|e| err(&index, e))?)
                    .map_err(|e| err(&index, e))?;
            graft_models::load::shard_files(dir, &index, &v).map_err(|e| e.to_string())?
        } else if dir.join("model.safetensors").exists() {
            vec![dir.join("model.safetensors")]
        } else {
            return Err(err(
                dir,
                "no model.safetensors or model.safetensors.index.json",
            ));
        };
        Self::from_files(dir, config, &files)
    }

    /// The model made of safetensors `files` (shards of one model).
    fn from_files(dir: &Path, config: Value, files: &[PathBuf]) -> Result<Self, String> {
        let mut handles = Vec::new();
        let mut tensors = HashMap::new();
        for (i, f) in files.iter().enumerate() {
            let file = std::fs::File::open(f).map_err(|e| err(f, e))?;
            let len = file.metadata().map_err(|e| err(f, e))?.len() as usize;
            let mut n = [0u8; 8];
            file.read_exact_at(&mut n, 0)
                .map_err(|e| err(f, format!("corrupt safetensors: {e}")))?;
            let n = u64::from_le_bytes(n) as usize;
            if n > 100_000_000 || 8 + n > len {
                return Err(err(f, "corrupt safetensors: bad header size"));
            }
            let mut head = vec![0u8; 8 + n];
            file.read_exact_at(&mut head, 0).map_err(|e| err(f, e))?;
            let header: serde_json::Map<String, Value> = serde_json::from_slice(&head[8..])
                .map_err(|e| err(f, format!("corrupt safetensors header: {e}")))?;
            for (name, info) in header.iter().filter(|(k, _)| *k != "__metadata__") {
                let bad = |what: &str| err(f, format!("corrupt safetensors: `{name}`: {what}"));
                let dtype = match info["dtype"].as_str() {
                    Some("F32") => Dtype::F32,
                    Some("F16") => Dtype::F16,
                    Some("BF16") => Dtype::BF16,
                    Some("F64") => Dtype::F64,
                    Some("I64") => Dtype::I64,
                    Some("I32") => Dtype::I32,
                    _ => return Err(bad("unknown dtype")),
                };
                let shape: Vec<usize> = info["shape"]
                    .as_array()
                    .and_then(|a| a.iter().map(|x| x.as_u64().map(|x| x as usize)).collect())
                    .ok_or_else(|| bad("bad shape"))?;
                let (a, b) = match info["data_offsets"].as_array().map(|o| {
                    (
                        o.first().and_then(Value::as_u64),
                        o.get(1).and_then(Value::as_u64),
                    )
                }) {
                    Some((Some(a), Some(b))) if a <= b => (a as usize, b as usize),
                    _ => return Err(bad("bad data_offsets")),
                };
                let width = match dtype {
                    Dtype::F16 | Dtype::BF16 => 2,
                    Dtype::F64 | Dtype::I64 => 8,
                    _ => 4,
                };
                // Checked: a header may claim shapes or offsets whose products overflow.
                let bytes = shape
                    .iter()
                    .try_fold(width, |acc: usize, &d| acc.checked_mul(d));
                let end = (8 + n).checked_add(b);
                if end.is_none_or(|e| e > len) || bytes != Some(b - a) {
                    return Err(bad("its data does not fit the file or its shape"));
                }
                tensors.insert(name.clone(), (i, dtype, shape, 8 + n + a..8 + n + b));
            }
            handles.push((f.clone(), file));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            adapter: false,
            files: handles,
            tensors,
            memory: HashMap::new(),
            tokenizer_files: Vec::new(),
        })
    }

    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.tensors.keys()
    }

    pub fn has(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    pub fn info(&self, name: &str) -> Option<(Dtype, &[usize])> {
        self.tensors
            .get(name)
            .map(|(_, d, s, _)| (*d, s.as_slice()))
    }

    /// A PEFT adapter folder (`adapter_config.json` + `adapter_model.safetensors`).
    fn open_adapter(dir: &Path) -> Result<Self, String> {
        let cfg_path = dir.join("adapter_config.json");
        let config: Value = serde_json::from_str(
            &std::fs::read_to_string(&cfg_path).map_err(|e| err(&cfg_path, e))?,
        )
        .map_err(|e| err(&cfg_path, e))?;
        let weights = dir.join("adapter_model.safetensors");
        let mut m = Self::from_files(dir, Value::Null, &[weights])?;
        m.config = config;
        m.adapter = true;
        Ok(m)
    }

    pub fn num_layers(&self) -> Result<usize, String> {
        if self.adapter {
            // Adapter tensors merge by name, with no layer structure.
            return Ok(0);
        }
        self.config["num_hidden_layers"]
            .as_u64()
            .map(|n| n as usize)
            .ok_or_else(|| err(&self.dir.join("config.json"), "no num_hidden_layers"))
    }

    /// The tensor's values as f32.
    pub fn read(&self, name: &str) -> Result<Vec<f32>, String> {
        let (file, dtype, _, range) = self
            .tensors
            .get(name)
            .ok_or_else(|| err(&self.dir, format!("no tensor `{name}`")))?;
        if *file == MEMORY {
            return Ok(self.memory[name].clone());
        }
        let (path, f) = &self.files[*file];
        let width = match dtype {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::BF16 => 2,
            Dtype::F64 => 8,
            other => {
                return Err(err(
                    &self.dir,
                    format!("tensor `{name}`: dtype {other:?} cannot be merged"),
                ))
            }
        };
        // In 4 MiB chunks, converted as read: no second full-size copy of the tensor.
        let mut out = Vec::with_capacity(range.len() / width);
        let mut buf = vec![0u8; (4 << 20) / width * width];
        let mut at = range.start;
        while at < range.end {
            let n = buf.len().min(range.end - at);
            f.read_exact_at(&mut buf[..n], at as u64)
                .map_err(|e| err(path, e))?;
            let chunk = &buf[..n];
            match dtype {
                Dtype::F32 => out.extend(
                    chunk
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                ),
                Dtype::F16 => out.extend(
                    chunk
                        .chunks_exact(2)
                        .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()),
                ),
                Dtype::BF16 => out.extend(
                    chunk
                        .chunks_exact(2)
                        .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()),
                ),
                _ => out.extend(
                    chunk
                        .chunks_exact(8)
                        .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32),
                ),
            }
            at += n;
        }
        Ok(out)
    }
}

/// The dtypes mergekit names (`dtype_from_name`), optionally `torch.`-prefixed.
pub fn dtype_from_name(name: &str) -> Result<Dtype, String> {
    match name.strip_prefix("torch.").unwrap_or(name) {
        "float32" => Ok(Dtype::F32),
        "float16" => Ok(Dtype::F16),
        "bfloat16" => Ok(Dtype::BF16),
        other => Err(format!(
            "dtype `{other}` is not supported (float32, float16, bfloat16)"
        )),
    }
}

pub fn dtype_name(d: Dtype) -> &'static str {
    match d {
        Dtype::F16 => "float16",
        Dtype::BF16 => "bfloat16",
        _ => "float32",
    }
}

fn size_of(d: Dtype) -> usize {
    match d {
        Dtype::F16 | Dtype::BF16 => 2,
        _ => 4,
    }
}

/// Rounds values to `d` (what writing and reading back in that dtype gives).
pub fn round_to(values: &mut [f32], d: Dtype) {
    match d {
        Dtype::F16 => values
            .iter_mut()
            .for_each(|x| *x = half::f16::from_f32(*x).to_f32()),
        Dtype::BF16 => values
            .iter_mut()
            .for_each(|x| *x = half::bf16::from_f32(*x).to_f32()),
        _ => {}
    }
}

fn to_bytes(values: &[f32], d: Dtype) -> Vec<u8> {
    match d {
        Dtype::F16 => values
            .iter()
            .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
            .collect(),
        Dtype::BF16 => values
            .iter()
            .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
            .collect(),
        _ => values.iter().flat_map(|x| x.to_le_bytes()).collect(),
    }
}

/// Output shards planned up front; tensors must then be written in plan order.
pub struct ShardWriter {
    dir: PathBuf,
    file: String,
    /// per shard: file name, (tensor name, dtype, shape) in order
    shards: Vec<(String, Vec<(String, Dtype, Vec<usize>)>)>,
    current: Option<(usize, std::io::BufWriter<std::fs::File>)>,
    next: (usize, usize),
}

impl ShardWriter {
    /// Splits the tensors into shards of at most `shard_bytes` (a tensor never splits) in `dir`.
    /// `file`: the shards' stem (`model` → `model.safetensors` or `model-0000i-of-0000N…`).
    pub fn new(
        dir: &Path,
        file: &str,
        tensors: &[(String, Dtype, Vec<usize>)],
        shard_bytes: usize,
    ) -> Self {
        let mut groups: Vec<Vec<(String, Dtype, Vec<usize>)>> = vec![Vec::new()];
        let mut size = 0;
        for t in tensors {
            let bytes = t.2.iter().product::<usize>() * size_of(t.1);
            if size > 0 && size + bytes > shard_bytes {
                groups.push(Vec::new());
                size = 0;
            }
            size += bytes;
            groups.last_mut().expect("one group").push(t.clone());
        }
        let n = groups.len();
        let shards = groups
            .into_iter()
            .enumerate()
            .map(|(i, g)| {
                let name = match n {
                    1 => format!("{file}.safetensors"),
                    _ => format!("{file}-{:05}-of-{n:05}.safetensors", i + 1),
                };
                (name, g)
            })
            .collect();
        Self {
            dir: dir.to_path_buf(),
            file: file.to_string(),
            shards,
            current: None,
            next: (0, 0),
        }
    }

    fn open_shard(&mut self, i: usize) -> Result<(), String> {
        let (name, tensors) = &self.shards[i];
        let path = self.dir.join(name);
        let mut header = serde_json::Map::new();
        header.insert("__metadata__".into(), json!({"format": "pt"}));
        let mut offset = 0;
        for (n, d, shape) in tensors {
            let bytes = shape.iter().product::<usize>() * size_of(*d);
            let dt = match d {
                Dtype::F16 => "F16",
                Dtype::BF16 => "BF16",
                _ => "F32",
            };
            header.insert(
                n.clone(),
                json!({"dtype": dt, "shape": shape, "data_offsets": [offset, offset + bytes]}),
            );
            offset += bytes;
        }
        let mut text = serde_json::to_string(&header).map_err(|e| e.to_string())?;
        while text.len() % 8 != 0 {
            text.push(' ');
        }
        let file = std::fs::File::create(&path).map_err(|e| err(&path, e))?;
        let mut w = std::io::BufWriter::new(file);
        w.write_all(&(text.len() as u64).to_le_bytes())
            .map_err(|e| err(&path, e))?;
        w.write_all(text.as_bytes()).map_err(|e| err(&path, e))?;
        self.current = Some((i, w));
        Ok(())
    }

    /// Writes the next tensor of the plan.
    pub fn write(&mut self, name: &str, values: &[f32]) -> Result<(), String> {
        let (s, t) = self.next;
        let Some((pname, dtype, shape)) = self.shards.get(s).and_then(|(_, g)| g.get(t)).cloned()
        else {
            return Err(format!("`{name}`: not in the output plan"));
        };
        if pname != name || shape.iter().product::<usize>() != values.len() {
            return Err(format!(
                "`{name}`: written out of plan order or with the wrong size"
            ));
        }
        if self.current.as_ref().map(|c| c.0) != Some(s) {
            self.open_shard(s)?;
        }
        let (_, w) = self.current.as_mut().expect("opened");
        // In chunks: no full-size byte copy of the tensor.
        for chunk in values.chunks(1 << 20) {
            w.write_all(&to_bytes(chunk, dtype))
                .map_err(|e| e.to_string())?;
        }
        self.next = if t + 1 == self.shards[s].1.len() {
            (s + 1, 0)
        } else {
            (s, t + 1)
        };
        if self.next.0 != s {
            if let Some((_, mut w)) = self.current.take() {
                w.flush().map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }

    /// Writes the index when there are several shards.
    pub fn finish(mut self) -> Result<(), String> {
        if let Some((_, mut w)) = self.current.take() {
            w.flush().map_err(|e| e.to_string())?;
        }
        if self.shards.len() > 1 {
            let mut map = serde_json::Map::new();
            let mut total = 0;
            for (file, g) in &self.shards {
                for (n, d, s) in g {
                    map.insert(n.clone(), json!(file));
                    total += s.iter().product::<usize>() * size_of(*d);
                }
            }
            let index = json!({"metadata": {"total_size": total}, "weight_map": map});
            let path = self
                .dir
                .join(format!("{}.safetensors.index.json", self.file));
            std::fs::write(
                &path,
                serde_json::to_string_pretty(&index).map_err(|e| e.to_string())?,
            )
            .map_err(|e| err(&path, e))?;
        }
        Ok(())
    }
}
