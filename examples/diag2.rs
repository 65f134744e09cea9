use std::collections::HashSet;
use strata::bench::read_history;
use strata::history::Layout;
use strata::plan::{plan, PlanOptions};
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let h = read_history(std::path::Path::new(&args[1])).unwrap();
    let n: usize = args[2].parse().unwrap();
    let k: usize = args[3].parse().unwrap();
    let opts = PlanOptions {
        max_layers: n,
        ..Default::default()
    };
    let mut layouts: Vec<Layout> = vec![];
    let mut plans = vec![];
    for b in &h[..=k] {
        let priors: Vec<Layout> = layouts.iter().rev().take(100).cloned().collect();
        let p = plan(b, &priors, &opts).unwrap();
        let mut l = p.layout();
        l.date = b.date.clone();
        layouts.push(l);
        plans.push(p);
    }
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
        println!(
            "layer {} P={:.3} size={:.1}MB n={}",
            l.index,
            l.change_probability,
            l.size as f64 / 1e6,
            l.components.len()
        );
        for c in &l.components {
            let ch = !old.contains(&(c.name.clone(), c.version.clone().unwrap()));
            let d = next
                .decisions
                .iter()
                .find(|d| d.component == c.name)
                .unwrap();
            if c.size > 1_000_000 || ch {
                println!(
                    "   {} {:>8.2}MB {} p={:.3} {:?}",
                    if ch { "*" } else { " " },
                    c.size as f64 / 1e6,
                    c.name,
                    d.change_probability.unwrap(),
                    d.estimate.unwrap()
                );
            }
        }
    }
}
