use std::collections::HashSet;
use strata::bench::read_history;
use strata::history::Layout;
use strata::plan::{plan, PlanOptions};
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let h = read_history(std::path::Path::new(&args[1])).unwrap();
    let n: usize = args[2].parse().unwrap();
    let opts = PlanOptions {
        max_layers: n,
        ..Default::default()
    };
    let mut layouts: Vec<Layout> = vec![];
    let mut plans = vec![];
    for b in &h {
        let priors: Vec<Layout> = layouts.iter().rev().take(100).cloned().collect();
        let p = plan(b, &priors, &opts).unwrap();
        let mut l = p.layout();
        l.date = b.date.clone();
        layouts.push(l);
        plans.push(p);
    }
    // classify waste: bytes of unchanged comps in non-reused layers, by whether their layer in prior build held a changed comp
    let (mut w_total, mut lb_total) = (0u64, 0u64);
    let mut by_p = [0u64; 5];
    for k in 11..h.len() {
        let prev = &layouts[k - 1];
        let next = &plans[k];
        let old: HashSet<(String, String)> = prev
            .layers
            .iter()
            .flat_map(|l| {
                l.components
                    .iter()
                    .map(|c| (c.name.clone(), c.version.clone().unwrap()))
            })
            .collect();
        for l in &next.layers {
            if l.reused {
                continue;
            }
            for c in &l.components {
                if old.contains(&(c.name.clone(), c.version.clone().unwrap())) {
                    w_total += c.size;
                    let pp = prev
                        .layers
                        .iter()
                        .position(|pl| pl.components.iter().any(|x| x.name == c.name))
                        .unwrap();
                    let prior_plan = &plans[k - 1];
                    let lp = prior_plan.layers[pp].change_probability;
                    by_p[((lp * 5.0) as usize).min(4)] += c.size;
                } else {
                    lb_total += c.size;
                }
            }
        }
    }
    let mut cal = [(0f64, 0f64, 0u32); 10];
    for k in 11..h.len() {
        let next_layout = &layouts[k];
        let prior_plan = &plans[k - 1];
        let keys: HashSet<String> = next_layout
            .layers
            .iter()
            .filter_map(|l| l.content_key())
            .collect();
        for l in &prior_plan.layers {
            let b = ((l.change_probability * 10.0) as usize).min(9);
            let changed = !keys.contains(&l.id);
            cal[b].0 += l.change_probability;
            cal[b].1 += changed as u32 as f64;
            cal[b].2 += 1;
        }
    }
    for (i, c) in cal.iter().enumerate() {
        if c.2 > 0 {
            println!(
                "P bucket {i}: n={} predicted {:.3} actual {:.3}",
                c.2,
                c.0 / c.2 as f64,
                c.1 / c.2 as f64
            );
        }
    }
    println!(
        "waste {:.1} MB/update, lower {:.1}; waste by prior layer P quintile {:?}",
        w_total as f64 / 1e6 / (h.len() - 11) as f64,
        lb_total as f64 / 1e6 / (h.len() - 11) as f64,
        by_p.iter()
            .map(|x| (*x as f64 / 1e6 / (h.len() - 11) as f64).round())
            .collect::<Vec<_>>()
    );
}
