//! Orthogonal matching pursuit (Pati et al. 1993), as mergekit-tokensurgeon uses it: each target
//! vector is approximated by at most `k` rows of a dictionary, picked one at a time (the row most
//! correlated with what is left), the coefficients refitted by least squares after each pick.
//! Shapes: dictionary (S, H), targets (N, H) → per target k row indices and k coefficients.
//! Targets are processed in blocks so the correlations (block, S) stay small.

use candle_core::{DType, Result, Tensor};

const BLOCK: usize = 256;

/// For each target row, the dictionary rows picked and their coefficients.
pub fn omp(dict: &Tensor, targets: &Tensor, k: usize) -> Result<Vec<(Vec<u32>, Vec<f32>)>> {
    let dict = dict.to_dtype(DType::F32)?.contiguous()?;
    let rows: Vec<Vec<f32>> = dict.to_vec2()?;
    let t: Vec<Vec<f32>> = targets.to_dtype(DType::F32)?.to_vec2()?;
    let k = k.min(rows.len());
    let dict_t = dict.t()?.contiguous()?;
    let mut out = Vec::with_capacity(t.len());
    for block in t.chunks(BLOCK) {
        let mut picked: Vec<Vec<usize>> = vec![Vec::new(); block.len()];
        let mut coef: Vec<Vec<f64>> = vec![Vec::new(); block.len()];
        let mut residual: Vec<Vec<f32>> = block.to_vec();
        for _ in 0..k {
            let r = Tensor::new(residual.clone(), dict.device())?;
            let corr: Vec<Vec<f32>> = r.matmul(&dict_t)?.to_vec2()?;
            for (j, c) in corr.iter().enumerate() {
                let best = (0..c.len())
                    .filter(|i| !picked[j].contains(i))
                    .max_by(|&a, &b| c[a].abs().total_cmp(&c[b].abs()));
                let Some(best) = best else { continue };
                if c[best] == 0.0 {
                    continue;
                }
                picked[j].push(best);
                coef[j] = least_squares(&rows, &picked[j], &block[j]);
                residual[j] = block[j].clone();
                for (&p, &c) in picked[j].iter().zip(&coef[j]) {
                    for (x, a) in residual[j].iter_mut().zip(&rows[p]) {
                        *x -= (c * *a as f64) as f32;
                    }
                }
            }
        }
        for (p, c) in picked.into_iter().zip(coef) {
            out.push((
                p.into_iter().map(|i| i as u32).collect(),
                c.into_iter().map(|x| x as f32).collect(),
            ));
        }
    }
    Ok(out)
}

/// argmin_c ‖y − Σ c_i rows[p_i]‖ by the normal equations (Gram matrix, Cholesky-free Gaussian
/// elimination with partial pivoting; a singular system keeps the coefficients found so far at 0).
fn least_squares(rows: &[Vec<f32>], p: &[usize], y: &[f32]) -> Vec<f64> {
    let n = p.len();
    let dot = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| *x as f64 * *y as f64)
            .sum::<f64>()
    };
    let mut a: Vec<Vec<f64>> = (0..n)
        .map(|i| {
            let mut r: Vec<f64> = (0..n).map(|j| dot(&rows[p[i]], &rows[p[j]])).collect();
            r.push(dot(&rows[p[i]], y));
            r
        })
        .collect();
    for col in 0..n {
        let piv = (col..n).max_by(|&x, &y| a[x][col].abs().total_cmp(&a[y][col].abs()));
        let Some(piv) = piv.filter(|&r| a[r][col].abs() > 1e-12) else {
            continue;
        };
        a.swap(col, piv);
        for r in 0..n {
            if r != col {
                let f = a[r][col] / a[col][col];
                for c in col..=n {
                    a[r][c] -= f * a[col][c];
                }
            }
        }
    }
    (0..n)
        .map(|i| match a[i][i].abs() > 1e-12 {
            true => a[i][n] / a[i][i],
            false => 0.0,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn recovers_a_sparse_combination() {
        use candle_core::{Device, Tensor};
        // 40 random rows of 16; the target is 0.5·row 3 − 2·row 17.
        let dict = Tensor::randn(0f32, 1.0, (40, 16), &Device::Cpu).unwrap();
        let target = ((dict.get(3).unwrap() * 0.5).unwrap()
            - (dict.get(17).unwrap() * 2.0).unwrap())
        .unwrap()
        .unsqueeze(0)
        .unwrap();
        let fit = super::omp(&dict, &target, 4).unwrap();
        let (picked, coef) = &fit[0];
        let c = |i: u32| picked.iter().position(|&p| p == i).map(|j| coef[j]);
        assert!((c(3).unwrap() - 0.5).abs() < 1e-4, "{picked:?} {coef:?}");
        assert!((c(17).unwrap() + 2.0).abs() < 1e-4);
        for (p, x) in picked.iter().zip(coef) {
            if *p != 3 && *p != 17 {
                assert!(x.abs() < 1e-4, "row {p}: {x}");
            }
        }
    }
}
