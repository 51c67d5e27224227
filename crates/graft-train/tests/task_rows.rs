//! Tasks with preprocessors become training rows as the loader tokenizes them, the drop report
//! counts what each filter removed, and shards of a source partition it.

use graft_data::rows::{load_section, RowModel, RowReader, SectionRows};
use graft_testkit::fixture;
use graft_train::objectives::{registry::objective, row_shape};

fn load(recipe_text: &str, dir: &std::path::Path) -> SectionRows {
    let path = dir.join("r.toml");
    std::fs::write(&path, recipe_text).unwrap();
    let recipe = graft_train::recipe::load(&path, &[]).unwrap();
    let source = graft_models::ModelSource::open(
        &recipe.model.path,
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let tokenizer = source.tokenizer().unwrap().clone();
    let tok = graft_data::Tokenize {
        tokenizer: &tokenizer,
        template: None,
        max_len: recipe.data.max_seq_len,
    };
    let obj = objective(&serde_json::to_value(&recipe.objective).unwrap()).unwrap();
    load_section(
        &recipe.data,
        &RowModel::new(&source, &tok),
        row_shape(obj.as_ref()),
        recipe.train.seed,
        &RowReader::new(false),
    )
    .unwrap()
}

#[test]
fn preprocessed_tasks_and_shards() {
    let dir = tempfile::tempdir().unwrap();
    let rows: String = (0..10)
        .map(|i| {
            let q = if i % 4 == 0 {
                "skip".to_string()
            } else {
                format!("what is {i} plus {i}")
            };
            format!("{{\"q\": \"{q}\", \"a\": \"{}\", \"id\": {i}}}\n", 2 * i)
        })
        .collect();
    std::fs::write(dir.path().join("qa.jsonl"), rows).unwrap();
    let model = fixture("models/t5");
    let recipe = |extra: &str| {
        format!(
            r#"[model]
path = "{}"
[[data.tasks]]
name = "qa"
train = "{}"
preprocessors = [
  {{ kind = "filter_regex", field = "q", pattern = "^skip$", drop = true }},
  {{ kind = "format", field = "inputs", template = "question: {{q}}" }},
  {{ kind = "rekey", fields = {{ inputs = "inputs", targets = "a" }} }},
]
features = ["inputs", "targets"]
[data]
max_seq_len = 64
{extra}
[objective]
kind = "sft"
"#,
            model.display(),
            dir.path().join("qa.jsonl").display()
        )
    };
    let all = load(&recipe(""), dir.path());
    let (_, rows) = &all.tasks[0];
    // rows 0, 4, 8 are dropped by the regex filter
    assert_eq!(rows.len(), 7);
    let (task, report) = &all.preprocessing[0];
    assert_eq!(task, "qa");
    assert_eq!((report[0].rows_in, report[0].rows_out), (10, 7));
    assert_eq!((report[2].rows_in, report[2].rows_out), (7, 7));
    // The first kept row (id 1) is tokenized as the loader tokenizes {"inputs", "targets"} rows.
    let source =
        graft_models::ModelSource::open(&model, candle_core::DType::F32, &candle_core::Device::Cpu)
            .unwrap();
    let tok = source.tokenizer().unwrap();
    assert_eq!(
        rows[0].encoder_ids.as_deref().unwrap(),
        tok.encode("question: what is 1 plus 1", true)
            .unwrap()
            .as_slice()
    );
    assert_eq!(
        &rows[0].input_ids[1..],
        tok.encode("2", true).unwrap().as_slice()
    );

    // Three shards: disjoint, and together every row once.
    let mut union: Vec<Vec<u32>> = Vec::new();
    for i in 0..3 {
        let shard = load(&recipe(&format!("shard = [{i}, 3]")), dir.path());
        union.extend(
            shard.tasks[0]
                .1
                .iter()
                .map(|r| r.encoder_ids.clone().unwrap()),
        );
    }
    let mut want: Vec<Vec<u32>> = rows
        .iter()
        .map(|r| r.encoder_ids.clone().unwrap())
        .collect();
    union.sort();
    want.sort();
    assert_eq!(union, want);
}
