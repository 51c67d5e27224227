//! Property tests: damaged mergekit YAML files and damaged model files are errors, never
//! panics (graft_testkit::assert_no_panic). A config that still parses is merged for real.

use std::path::Path;

use graft_merge::merge::{run, Options};
use graft_merge::mergekit_yaml::MergeConfig;
use graft_testkit::{assert_no_panic, fixture};

fn merge(config: &Path, base_dir: &Path) -> Result<(), String> {
    let cfg = MergeConfig::read(config).map_err(|e| e.to_string())?;
    let out = config.with_extension("out");
    let _ = std::fs::remove_dir_all(&out);
    let opts = Options {
        seed: 0,
        shard_bytes: 1 << 30,
        base_dir: base_dir.to_path_buf(),
    };
    let result = run(&cfg, &out, &opts, |_, _| ())
        .map(|_| ())
        .map_err(|e| e.to_string());
    let _ = std::fs::remove_dir_all(&out);
    result
}

#[test]
fn damaged_mergekit_configs_are_errors() {
    let base = fixture("merge");
    for name in [
        "ties.yml",
        "slerp_gradient.yml",
        "slices_slerp.yml",
        "passthrough_scale.yml",
    ] {
        let path = base.join("configs").join(name);
        merge(&path, &base).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_no_panic(name, &bytes, 150, |p: &Path| merge(p, &base));
    }
}

#[test]
fn damaged_model_files_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    for m in ["base", "ft_a", "ft_b"] {
        std::fs::create_dir_all(models.join(m)).unwrap();
        for e in std::fs::read_dir(fixture("merge/models").join(m))
            .unwrap()
            .flatten()
        {
            std::fs::copy(e.path(), models.join(m).join(e.file_name())).unwrap();
        }
    }
    let config = dir.path().join("ties.yml");
    std::fs::copy(fixture("merge/configs/ties.yml"), &config).unwrap();
    merge(&config, dir.path()).unwrap();
    for file in ["model.safetensors", "config.json"] {
        let target = models.join("ft_a").join(file);
        let good = std::fs::read(&target).unwrap();
        assert_no_panic(file, &good, 200, |p: &Path| {
            std::fs::copy(p, &target).unwrap();
            merge(&config, dir.path())
        });
        std::fs::write(&target, &good).unwrap();
    }
}
