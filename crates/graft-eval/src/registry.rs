//! Tasks by name, as lm-eval's `--include_path` finds them: every `*.yaml` under the given folders
//! that names a `task` is indexed by it; a `tag` (also one inherited through `include`) names all
//! tasks carrying it; a group file (`group:` + a `task:` list) names its members, which may
//! themselves be tasks, tags or groups. lm-eval's own task tree works as a folder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_yaml_ng::Value as Y;

#[derive(Debug, Default)]
pub struct TaskIndex {
    pub tasks: BTreeMap<String, PathBuf>,
    pub tags: BTreeMap<String, Vec<String>>,
    /// Group name → (its file, its members).
    pub groups: BTreeMap<String, (PathBuf, Vec<String>)>,
}

/// The YAML files under `dir`, sorted (symbolic links are not followed: no cycles).
fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    for p in paths {
        let is_link = p
            .symlink_metadata()
            .is_ok_and(|m| m.file_type().is_symlink());
        if p.is_dir() && !is_link && depth < 16 {
            yaml_files(&p, out, depth + 1);
        } else if p.is_file() && p.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(p);
        }
    }
}

fn read_yaml(path: &Path) -> Option<serde_yaml_ng::Mapping> {
    let text = std::fs::read_to_string(path).ok()?;
    match serde_yaml_ng::from_str::<Y>(&text).ok()? {
        Y::Mapping(m) => Some(m),
        _ => None,
    }
}

fn strings(v: Option<&Y>) -> Vec<String> {
    match v {
        Some(Y::String(s)) => vec![s.clone()],
        Some(Y::Sequence(s)) => s
            .iter()
            .filter_map(|x| x.as_str().map(String::from))
            .collect(),
        _ => Vec::new(),
    }
}

/// A task file's tags: its own, else its `include`d base's (lm-eval merges the base under it).
fn tags_of(path: &Path, map: &serde_yaml_ng::Mapping, depth: usize) -> Vec<String> {
    let own = strings(map.get("tag"));
    if !own.is_empty() || depth > 8 {
        return own;
    }
    match map.get("include").and_then(Y::as_str) {
        Some(inc) => {
            let base = path.parent().unwrap_or(Path::new(".")).join(inc);
            read_yaml(&base).map_or(Vec::new(), |m| tags_of(&base, &m, depth + 1))
        }
        None => Vec::new(),
    }
}

impl TaskIndex {
    /// Indexes every task file under `dirs` (the first file naming a task wins, as a later
    /// duplicate in lm-eval's tree is a variant of it).
    pub fn scan(dirs: &[PathBuf]) -> Self {
        let mut index = Self::default();
        let mut files = Vec::new();
        for d in dirs {
            yaml_files(d, &mut files, 0);
        }
        for path in files {
            let Some(map) = read_yaml(&path) else {
                continue;
            };
            match (map.get("group").and_then(Y::as_str), map.get("task")) {
                (Some(g), Some(Y::Sequence(members))) => {
                    let names = members
                        .iter()
                        .filter_map(|m| m.as_str().map(String::from))
                        .collect();
                    index.groups.entry(g.into()).or_insert((path, names));
                }
                (_, Some(Y::String(name))) => {
                    for tag in tags_of(&path, &map, 0) {
                        index.tags.entry(tag).or_default().push(name.clone());
                    }
                    index.tasks.entry(name.clone()).or_insert(path);
                }
                _ => {}
            }
        }
        index
    }

    /// The task files a name stands for: a task, or every task of a tag or group, in order and
    /// without repeats. `None` when the name is unknown.
    pub fn expand(&self, name: &str) -> Option<Vec<PathBuf>> {
        let mut out = Vec::new();
        self.expand_into(name, &mut out, 0).then_some(out)
    }

    fn expand_into(&self, name: &str, out: &mut Vec<PathBuf>, depth: usize) -> bool {
        if depth > 8 {
            return false;
        }
        if let Some(p) = self.tasks.get(name) {
            if !out.contains(p) {
                out.push(p.clone());
            }
            return true;
        }
        let members: &[String] = match (self.tags.get(name), self.groups.get(name)) {
            (Some(t), _) => t,
            (None, Some((_, m))) => m,
            (None, None) => return false,
        };
        let mut any = false;
        for m in members {
            any |= self.expand_into(m, out, depth + 1);
        }
        any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_tags_and_groups_expand_to_task_files() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let w = |rel: &str, text: &str| {
            let p = d.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        w("arc/arc_easy.yaml", "tag:\n  - ai2_arc\ntask: arc_easy\n");
        w(
            "arc/arc_challenge.yaml",
            "include: arc_easy.yaml\ntask: arc_challenge\n",
        );
        w("mmlu/_t", "tag: mmlu_stem_tasks\n");
        w(
            "mmlu/mmlu_anatomy.yaml",
            "include: _t\ntask: mmlu_anatomy\n",
        );
        w(
            "mmlu/_mmlu.yaml",
            "group: mmlu\ntask:\n  - mmlu_stem_tasks\n",
        );
        w("bad.yaml", ": not yaml [");
        let index = TaskIndex::scan(&[d.to_path_buf()]);
        let rel = |v: Vec<PathBuf>| -> Vec<String> {
            v.iter()
                .map(|p| p.strip_prefix(d).unwrap().display().to_string())
                .collect()
        };
        assert_eq!(
            rel(index.expand("arc_easy").unwrap()),
            ["arc/arc_easy.yaml"]
        );
        assert_eq!(
            rel(index.expand("ai2_arc").unwrap()),
            ["arc/arc_challenge.yaml", "arc/arc_easy.yaml"]
        );
        assert_eq!(
            rel(index.expand("mmlu").unwrap()),
            ["mmlu/mmlu_anatomy.yaml"]
        );
        assert!(index.expand("nope").is_none());
    }
}
