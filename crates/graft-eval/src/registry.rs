//! Tasks by name, as lm-eval's `--include_path` finds them: every `*.yaml` under the given folders
//! that names a `task` is indexed by it; a `tag` (also one inherited through `include`) names all
//! tasks carrying it; a group file (`group:` + a `task:` list) names its members, which may
//! themselves be tasks, tags or groups. lm-eval's own task tree works as a folder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_yaml_ng::Value as Y;

use crate::groups::{AggMetric, GroupRun};

#[derive(Debug, Default)]
pub struct TaskIndex {
    pub tasks: BTreeMap<String, PathBuf>,
    pub tags: BTreeMap<String, Vec<String>>,
    pub groups: BTreeMap<String, GroupDef>,
}

/// A group file: its members by name, and how its row aggregates them.
#[derive(Debug, Clone)]
pub struct GroupDef {
    pub file: PathBuf,
    pub members: Vec<String>,
    /// Members defined inline (a mapping instead of a name), which graft does not run.
    pub inline: usize,
    pub alias: Option<String>,
    pub aggregate: Result<Vec<AggMetric>, String>,
    pub version: serde_json::Value,
}

impl GroupDef {
    fn read(file: PathBuf, map: &serde_yaml_ng::Mapping, members: &[Y]) -> Self {
        let aggregate = match map.get("aggregate_metric_list") {
            None => Ok(Vec::new()),
            Some(v) => serde_yaml_ng::from_value::<Vec<AggMetric>>(v.clone())
                .map_err(|e| format!("aggregate_metric_list: {e}")),
        };
        let version = map
            .get("metadata")
            .and_then(|m| m.get("version"))
            .and_then(|v| serde_json::to_value(v).ok())
            .unwrap_or(serde_json::Value::Null);
        Self {
            file,
            members: members
                .iter()
                .filter_map(|m| m.as_str().map(String::from))
                .collect(),
            inline: members.iter().filter(|m| m.as_str().is_none()).count(),
            alias: map.get("group_alias").and_then(Y::as_str).map(String::from),
            aggregate,
            version,
        }
    }
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
                    let def = GroupDef::read(path, &map, members);
                    index.groups.entry(g.into()).or_insert(def);
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
            (None, Some(g)) => &g.members,
            (None, None) => return false,
        };
        let mut any = false;
        for m in members {
            any |= self.expand_into(m, out, depth + 1);
        }
        any
    }
}

impl TaskIndex {
    /// The groups a name stands for: itself (when it is a group) and every group nested in it,
    /// each with its direct members and all its leaf tasks, outermost first.
    pub fn group_runs(&self, name: &str) -> Result<Vec<GroupRun>, String> {
        let mut out = Vec::new();
        self.collect_groups(name, &mut out, 0)?;
        Ok(out)
    }

    fn collect_groups(
        &self,
        name: &str,
        out: &mut Vec<GroupRun>,
        depth: usize,
    ) -> Result<(), String> {
        let Some(g) = self.groups.get(name) else {
            return Ok(());
        };
        if depth > 8 || out.iter().any(|r| r.name == name) {
            return Ok(());
        }
        if g.inline > 0 {
            return Err(format!(
                "{}: group `{name}` defines {} of its tasks inline; graft runs groups of named tasks",
                g.file.display(),
                g.inline
            ));
        }
        let aggregate = g
            .aggregate
            .clone()
            .map_err(|e| format!("{}: group `{name}`: {e}", g.file.display()))?;
        let leaves = self
            .expand(name)
            .unwrap_or_default()
            .iter()
            .filter_map(|p| {
                self.tasks
                    .iter()
                    .find(|(_, f)| *f == p)
                    .map(|(n, _)| n.clone())
            })
            .collect();
        // A tag among the members stands for its tasks, as lm-eval lists them.
        let children = g
            .members
            .iter()
            .flat_map(|m| match self.tags.get(m) {
                Some(t) if !self.tasks.contains_key(m) && !self.groups.contains_key(m) => t.clone(),
                _ => vec![m.clone()],
            })
            .collect();
        out.push(GroupRun {
            name: name.into(),
            alias: g.alias.clone(),
            children,
            leaves,
            aggregate,
            version: g.version.clone(),
        });
        for m in &g.members {
            self.collect_groups(m, out, depth + 1)?;
        }
        Ok(())
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
