//! lm-eval's templates rendered as lm-eval renders them: tests/fixtures/eval/jinja_python.json
//! holds, per template, the output of lm_eval.utils.apply_template (Jinja2 on Python objects)
//! or the error it raised (tools/fixtures/make_jinja_fixtures.py). graft must print the same
//! text — Python's methods, slices, operators, filters, and how Python prints its values — and
//! fail where lm-eval fails.

use graft_eval::prompt::Templates;
use graft_testkit::read_json;
use serde_json::Value;

#[test]
fn templates_render_as_jinja2_on_python_objects() {
    let f = read_json("eval/jinja_python.json");
    let doc = f["doc"].as_object().unwrap();
    let t = Templates::new();
    let mut wrong = Vec::new();
    for case in f["cases"].as_array().unwrap() {
        let template = case["template"].as_str().unwrap();
        let got = t.text(&Some(Value::String(template.into())), doc);
        match (&got, case.get("output")) {
            (Ok(g), Some(w)) if g == w.as_str().unwrap() => {}
            (Err(_), None) => {}
            _ => wrong.push(format!("{template:?}: graft {got:?}, lm-eval {case}")),
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {}:\n{}",
        wrong.len(),
        f["cases"].as_array().unwrap().len(),
        wrong.join("\n")
    );
}
