//! Each fused op against PyTorch/transformers (tools/fixtures/make_fused_op_fixtures.py: the
//! reference modules run in float64 on the fixtures' float32 inputs): output and every input
//! gradient to 1e-5 of the reference tensor's largest magnitude (1e-6 absolute at least), with
//! edge shapes — one row, T = 1, odd widths and head dims, grouped-query attention — and
//! soft-capping, SwiGLU and GeGLU.

use std::collections::HashMap;

use candle_core::{DType, Device, Result, Tensor, Var};
use graft_models::config::Activation;
use graft_models::layers::{attention, frozen, fused_norm, fused_swiglu, head_logprobs, rope};
use graft_testkit::fixture;

struct Case {
    name: String,
    t: HashMap<String, Tensor>,
}

impl Case {
    fn load(name: &str) -> Case {
        let path = fixture(&format!("fused_ops/{name}.safetensors"));
        let t = candle_core::safetensors::load(&path, &Device::Cpu)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Case {
            name: name.into(),
            t,
        }
    }

    fn get(&self, k: &str) -> Tensor {
        self.t
            .get(k)
            .unwrap_or_else(|| panic!("{}: no `{k}`", self.name))
            .to_dtype(DType::F32)
            .unwrap()
    }

    fn var(&self, k: &str) -> Var {
        Var::from_tensor(&self.get(k)).unwrap()
    }

    fn scalar(&self, k: &str) -> f64 {
        self.t[k].flatten_all().unwrap().to_vec1::<f64>().unwrap()[0]
    }

    /// `got` equals the fixture's `want` to 1e-5 of its largest magnitude, at least 1e-6
    /// absolute (∂q at T = 1 is exactly zero in the reference: one key, constant softmax).
    fn check(&self, what: &str, got: &Tensor, want: &str) {
        let want = &self.t[want];
        assert_eq!(got.dims(), want.dims(), "{} {what}: shape", self.name);
        let got = got.to_dtype(DType::F64).unwrap();
        let scale = want
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        let diff = (&got - want)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!(
            diff <= 1e-5 * scale.max(0.1),
            "{} {what}: max diff {diff:e} (scale {scale:e})",
            self.name
        );
    }
}

#[test]
fn rmsnorm_equals_transformers() -> Result<()> {
    for kind in ["llama", "gemma"] {
        for shape in ["1x7", "6x33", "64x64"] {
            let c = Case::load(&format!("rmsnorm_{kind}_{shape}"));
            let (x, w) = (c.var("x"), c.var("w"));
            let op = fused_norm::FusedRmsNorm {
                eps: c.scalar("eps"),
                one_plus: kind == "gemma",
            };
            let y = x.as_tensor().apply_op2(w.as_tensor(), op)?;
            c.check("y", &y, "y");
            let grads = (y * c.get("g"))?.sum_all()?.backward()?;
            c.check("dx", grads.get(x.as_tensor()).unwrap(), "dx");
            c.check("dw", grads.get(w.as_tensor()).unwrap(), "dw");
        }
    }
    Ok(())
}

#[test]
fn swiglu_equals_transformers() -> Result<()> {
    for shape in ["1x1", "5x13", "16x96"] {
        let c = Case::load(&format!("swiglu_{shape}"));
        let (gate, up) = (c.var("gate"), c.var("up"));
        let y = gate.as_tensor().apply_op2(
            up.as_tensor(),
            fused_swiglu::FusedGlu {
                act: Activation::Silu,
            },
        )?;
        c.check("y", &y, "y");
        let grads = (y * c.get("g"))?.sum_all()?.backward()?;
        c.check("dgate", grads.get(gate.as_tensor()).unwrap(), "dgate");
        c.check("dup", grads.get(up.as_tensor()).unwrap(), "dup");
    }
    Ok(())
}

#[test]
fn rope_equals_transformers() -> Result<()> {
    for shape in ["1x2x1x4", "2x3x5x10", "1x4x16x64"] {
        let c = Case::load(&format!("rope_{shape}"));
        let x = c.var("x");
        let y = rope::apply_fused(x.as_tensor(), &c.get("cos"), &c.get("sin"))?;
        c.check("y", &y, "y");
        let grads = (y * c.get("g"))?.sum_all()?.backward()?;
        c.check("dx", grads.get(x.as_tensor()).unwrap(), "dx");
    }
    Ok(())
}

/// Llama's eager attention, and Gemma 2's with soft-capping (cap 0.7).
#[test]
fn causal_gqa_attention_equals_transformers() -> Result<()> {
    let cases = [
        "attention_1x1x1x1x4",
        "attention_2x6x2x7x5",
        "attention_1x4x4x16x64",
        "attention_softcap_1x1x1x1x4",
        "attention_softcap_2x6x2x7x5",
    ];
    for name in cases {
        let c = Case::load(name);
        let softcap = c.t.contains_key("softcap").then(|| c.scalar("softcap"));
        let (q, k, v) = (c.get("q"), c.var("k"), c.var("v"));
        let (b, hq, t, d) = q.dims4()?;
        let kh = k.dim(1)?;
        // attention.rs's layout: the R query heads of kv head j folded into rows (B, K, R·T, D).
        let q = Var::from_tensor(&q.reshape((b, kh, hq / kh * t, d))?)?;
        let mask = attention::causal_mask(t, 0, None, &Device::Cpu)?;
        let y = graft_models::layers::fused_attention::fused_attention(
            q.as_tensor(),
            k.as_tensor(),
            v.as_tensor(),
            &mask,
            c.scalar("scale"),
            softcap,
        )?
        .reshape((b, hq, t, d))?;
        c.check("y", &y, "y");
        let grads = (y * c.get("g"))?.sum_all()?.backward()?;
        let dq = grads.get(q.as_tensor()).unwrap().reshape((b, hq, t, d))?;
        c.check("dq", &dq, "dq");
        c.check("dk", grads.get(k.as_tensor()).unwrap(), "dk");
        c.check("dv", grads.get(v.as_tensor()).unwrap(), "dv");
    }
    Ok(())
}

#[test]
fn head_logprobs_equal_log_softmax() -> Result<()> {
    for shape in ["1x8x11", "37x16x50", "5x64x300"] {
        let c = Case::load(&format!("head_logprobs_{shape}"));
        let (h, w) = (c.var("h"), c.var("w"));
        let targets: Vec<u32> = c.t["targets"]
            .to_vec1::<i64>()?
            .into_iter()
            .map(|x| x as u32)
            .collect();
        let (logp, lse) = head_logprobs::head_logprobs(h.as_tensor(), w.as_tensor(), &targets)?;
        c.check("logp", &logp, "logp");
        c.check("lse", &lse, "lse");
        let loss = ((logp * c.get("g_logp"))?.sum_all()? + (lse * c.get("g_lse"))?.sum_all()?)?;
        let grads = loss.backward()?;
        c.check("dh", grads.get(h.as_tensor()).unwrap(), "dh");
        c.check("dw", grads.get(w.as_tensor()).unwrap(), "dw");
    }
    Ok(())
}

#[test]
fn frozen_linear_equals_f_linear() -> Result<()> {
    for shape in ["1x3x5", "9x17x33"] {
        let c = Case::load(&format!("frozen_linear_{shape}"));
        let x = c.var("x");
        let y = frozen::frozen_matmul(x.as_tensor(), &c.get("w"))?;
        c.check("y", &y, "y");
        let grads = (y * c.get("g"))?.sum_all()?.backward()?;
        c.check("dx", grads.get(x.as_tensor()).unwrap(), "dx");
    }
    Ok(())
}
