//! Panics inside dependencies turned into errors. graft's own code returns errors for bad input;
//! a few dependencies panic on it instead (candle 0.11's GGUF reader divides by the file's
//! `general.alignment`, so 0 panics). Calls into them on user input go through [`catch`]; the
//! CLI's panic hook stays silent while one runs (the panic becomes this error, not an exit).

use std::cell::Cell;

thread_local! {
    static CATCHING: Cell<u32> = const { Cell::new(0) };
}

/// Runs `f`; a panic inside it becomes `Err("<what>: <panic message>")`.
pub fn catch<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, String> {
    CATCHING.with(|c| c.set(c.get() + 1));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    CATCHING.with(|c| c.set(c.get() - 1));
    result.map_err(|payload| {
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into());
        format!("{what}: {msg}")
    })
}

/// Whether this thread is inside [`catch`] (a panic hook should then stay quiet).
pub fn catching() -> bool {
    CATCHING.with(|c| c.get() > 0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_panic_becomes_an_error() {
        let e = super::catch("reading x", || -> u32 { panic!("boom") }).unwrap_err();
        assert_eq!(e, "reading x: boom");
        assert!(!super::catching());
        assert_eq!(super::catch("y", || 3).unwrap(), 3);
    }
}
