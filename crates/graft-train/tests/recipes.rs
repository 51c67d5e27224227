//! The example recipes in recipes/ stay valid.

#[test]
fn example_recipes_parse() {
    let dir = graft_testkit::fixture("../../recipes");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let recipe = graft_train::recipe::load(&path, &[]).unwrap_or_else(|e| panic!("{e}"));
            let spec = serde_json::to_value(&recipe.objective).unwrap();
            graft_train::objectives::registry::objective(&spec)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            n += 1;
        }
    }
    assert!(n >= 4, "found {n} recipes");
}
