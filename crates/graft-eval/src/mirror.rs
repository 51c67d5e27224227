//! Hub datasets from a local mirror: lm-eval's `dataset_path: allenai/ai2_arc` +
//! `dataset_name: ARC-Easy` resolved to files on disk in the layouts a hub download has, so the
//! task files run unchanged. Tried in order under `<datasets-dir>/<dataset_path>` (or
//! `<dataset_path>` itself when it is a local folder, as `datasets.load_dataset` does):
//!
//! - `<name>/<split>-*.{parquet,jsonl,json}` or `<name>/<split>.{…}` (the hub's own layout)
//! - `<name>/<split>/*.parquet` (the hub's `refs/convert/parquet` layout)
//! - `data/<name>/…` and, for a dataset without configs, `<split>…` and `data/<split>…`
//!
//! `<name>` is `dataset_name` (`default` without one); the dataset's root serves it when the
//! dataset has no per-config folders or the config is `default`.
//! Nothing found is an error that lists every place looked at.

use std::path::{Path, PathBuf};

const EXTENSIONS: &[&str] = &["parquet", "jsonl", "json", "gz", "zst"];

/// The files of `split` of hub dataset `path` (config `name`), in name order.
pub fn resolve(
    datasets_dir: Option<&Path>,
    path: &str,
    name: Option<&str>,
    split: &str,
) -> Result<Vec<PathBuf>, String> {
    if path.is_empty() || path.split('/').any(|c| c == "..") {
        return Err(format!("dataset_path: `{path}` is not a dataset name"));
    }
    let mut roots = Vec::new();
    if let Some(dir) = datasets_dir {
        roots.push(dir.join(path));
    }
    if Path::new(path).is_dir() {
        roots.push(PathBuf::from(path));
    }
    if roots.is_empty() {
        return Err(format!(
            "dataset_path: `{path}` is a hub dataset; graft reads a local copy: give --datasets-dir DIR \
             (or GRAFT_DATASETS_DIR) holding DIR/{path}/{}<split>-*.parquet",
            name.map_or(String::new(), |n| format!("{n}/"))
        ));
    }
    let mut tried = Vec::new();
    for root in &roots {
        for folder in candidates(root, name) {
            if let Some(files) = split_files(&folder, split) {
                return Ok(files);
            }
            tried.push(format!("{}/{split}[-.]*", folder.display()));
        }
    }
    Err(format!(
        "dataset `{path}`{}: no files for split `{split}`; looked for {}",
        name.map_or(String::new(), |n| format!(" ({n})")),
        tried.join(", ")
    ))
}

/// The folders that may hold the config's split files, most specific first.
fn candidates(root: &Path, name: Option<&str>) -> Vec<PathBuf> {
    let name = name.filter(|n| !n.is_empty() && !n.contains(".."));
    let folder = name.unwrap_or("default");
    let mut out = vec![root.join(folder), root.join("data").join(folder)];
    // The root serves a named config only when the dataset has no per-config folders: a
    // sibling config's files must never stand in for the one asked for.
    if folder == "default" || !has_config_folders(root) {
        out.push(root.to_path_buf());
        out.push(root.join("data"));
    }
    out
}

fn has_config_folders(root: &Path) -> bool {
    std::fs::read_dir(root).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            let n = e.file_name().to_string_lossy().to_string();
            e.path().is_dir() && n != "data" && !n.starts_with('.')
        })
    })
}

/// `<split>-*` / `<split>.*` data files in `folder`, else the Parquet files of `folder/<split>/`.
fn split_files(folder: &Path, split: &str) -> Option<Vec<PathBuf>> {
    let is_data = |p: &Path| {
        p.is_file()
            && p.extension()
                .is_some_and(|e| EXTENSIONS.contains(&e.to_string_lossy().as_ref()))
    };
    let list = |dir: &Path, keep: &dyn Fn(&str) -> bool| -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| is_data(p))
            .filter(|p| p.file_name().is_some_and(|n| keep(&n.to_string_lossy())))
            .collect();
        files.sort();
        files
    };
    let prefixed = |n: &str| {
        n.strip_prefix(split)
            .is_some_and(|rest| rest.starts_with('-') || rest.starts_with('.'))
    };
    let files = list(folder, &prefixed);
    if !files.is_empty() {
        return Some(files);
    }
    let files = list(&folder.join(split), &|n: &str| !n.starts_with('.'));
    (!files.is_empty()).then_some(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(root: &Path, rel: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"").unwrap();
    }

    fn names(files: &[PathBuf], root: &Path) -> Vec<String> {
        files
            .iter()
            .map(|f| f.strip_prefix(root).unwrap().display().to_string())
            .collect()
    }

    #[test]
    fn hub_layouts_resolve_and_configs_never_mix() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        for f in [
            "allenai/ai2_arc/ARC-Easy/test-00000-of-00001.parquet",
            "allenai/ai2_arc/ARC-Easy/train-00000-of-00001.parquet",
            "allenai/ai2_arc/ARC-Challenge/test-00000-of-00001.parquet",
            "openai/gsm8k/main/test-00000-of-00001.parquet",
            "Rowan/hellaswag/data/validation-00000-of-00002.parquet",
            "Rowan/hellaswag/data/validation-00001-of-00002.parquet",
            "Rowan/hellaswag/data/train_sft-00000-of-00001.parquet",
            "conv/x/default/test/0000.parquet",
            "plain/y/test.jsonl",
        ] {
            touch(d, f);
        }
        let got =
            |p: &str, n: Option<&str>, s: &str| resolve(Some(d), p, n, s).map(|f| names(&f, d));
        assert_eq!(
            got("allenai/ai2_arc", Some("ARC-Easy"), "test").unwrap(),
            ["allenai/ai2_arc/ARC-Easy/test-00000-of-00001.parquet"]
        );
        assert_eq!(got("Rowan/hellaswag", None, "validation").unwrap().len(), 2);
        // `train` does not pick up `train_sft`.
        assert!(got("Rowan/hellaswag", None, "train").is_err());
        assert_eq!(
            got("conv/x", Some("default"), "test").unwrap(),
            ["conv/x/default/test/0000.parquet"]
        );
        assert_eq!(
            got("plain/y", Some("any"), "test").unwrap(),
            ["plain/y/test.jsonl"]
        );
        // A config that is not there is an error naming the places looked at, not ARC-Easy's files.
        let e = got("allenai/ai2_arc", Some("ARC-Hard"), "test").unwrap_err();
        assert!(e.contains("ARC-Hard") && e.contains("looked for"), "{e}");
        assert!(got("openai/gsm8k", Some("main"), "validation").is_err());
        let e = resolve(None, "openai/gsm8k", Some("main"), "test").unwrap_err();
        assert!(e.contains("--datasets-dir"), "{e}");
        assert!(resolve(Some(d), "../etc", None, "test").is_err());
    }
}
