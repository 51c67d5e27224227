//! Property tests: damaged lm-eval task files and task data are errors, never panics
//! (graft_testkit::assert_no_panic). A task that still opens is prepared (templates rendered).

use std::path::Path;

use graft_eval::Task;
use graft_testkit::{assert_no_panic, fixture};

fn open(path: &Path) -> Result<usize, String> {
    let task = Task::open(path, &Default::default()).map_err(|e| e.to_string())?;
    task.prepare().map(|p| p.len()).map_err(|e| e.to_string())
}

/// A copy of the eval fixtures with `file` replaced by each damaged version, opening `task`.
fn in_fixture_dir(file: &str, task: &str) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir(root.join("data")).unwrap();
    for sub in ["", "data"] {
        for e in std::fs::read_dir(fixture("eval").join(sub))
            .unwrap()
            .flatten()
        {
            if e.path().is_file() {
                std::fs::copy(e.path(), root.join(sub).join(e.file_name())).unwrap();
            }
        }
    }
    let target = root.join(file);
    let good = std::fs::read(&target).unwrap();
    let task = root.join(task);
    open(&task).unwrap();
    assert_no_panic(file.rsplit('/').next().unwrap(), &good, 250, |p: &Path| {
        std::fs::copy(p, &target).unwrap();
        open(&task)
    });
}

#[test]
fn damaged_task_files_are_errors() {
    for task in ["tiny_mc.yaml", "tiny_gen.yaml", "tiny_ppl.yaml"] {
        in_fixture_dir(task, task);
    }
}

#[test]
fn damaged_task_data_is_an_error() {
    in_fixture_dir("data/tiny_mc_test.jsonl", "tiny_mc.yaml");
    in_fixture_dir("data/tiny_gen_test.jsonl", "tiny_gen.yaml");
}
