//! What a benchmark run produced, and its two renderings: the `--json` summary and the
//! Markdown section of BENCHMARKS.md. Pure (no I/O), so the shape of both is unit-tested.

use serde::Serialize;
use serde_json::{Value, json};

use super::stats::{Better, Ratio, Summary, ratio, summarize};
use super::systems::System;

/// What a measurement is.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricDef {
    /// Stable id, e.g. `w1_r2_p16_ops`.
    pub id: String,
    /// The workload, e.g. `W1`.
    pub workload: String,
    /// What the table calls it.
    pub label: String,
    /// Unit: `ops/s`, `ms`, `entries`.
    pub unit: String,
    /// Which way is better.
    pub better: Better,
}

impl MetricDef {
    /// A definition.
    pub fn new(id: &str, workload: &str, label: &str, unit: &str, better: Better) -> MetricDef {
        MetricDef {
            id: id.into(),
            workload: workload.into(),
            label: label.into(),
            unit: unit.into(),
            better,
        }
    }
}

/// One measurement's samples, one per passed run and system.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    /// What it is.
    pub def: MetricDef,
    /// Redis's samples.
    pub redis: Vec<f64>,
    /// Partita's samples.
    pub partita: Vec<f64>,
}

/// The outcome of one correctness gate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Gate {
    /// The workload it closed.
    pub workload: String,
    /// The step within it (e.g. `pipeline 16`).
    pub step: String,
    /// 1-based run.
    pub run: usize,
    /// The system.
    pub system: System,
    /// Whether it passed.
    pub passed: bool,
    /// Keys on every copy, when it passed.
    pub keys: Option<u64>,
    /// Why it failed, or what it checked.
    pub detail: String,
}

/// One row of W6's correctness table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct W6Row {
    /// The check.
    pub check: String,
    /// What Redis did.
    pub redis: String,
    /// Whether Redis did the safe thing.
    pub redis_ok: bool,
    /// What Partita did.
    pub partita: String,
    /// Whether Partita did the safe thing.
    pub partita_ok: bool,
}

/// Everything a run produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Results {
    /// Workloads selected.
    pub workloads: Vec<String>,
    /// Measurements, in the order first recorded.
    pub metrics: Vec<Metric>,
    /// Every gate, passed or failed (a run that broke before its gate is a failed gate).
    pub gates: Vec<Gate>,
    /// W6's table (rows per system are merged by check).
    pub w6: Vec<W6Row>,
    /// Free-form observations (sync kinds, failures' first error).
    pub notes: Vec<String>,
}

impl Results {
    /// Adds one sample.
    pub fn record(&mut self, def: &MetricDef, system: System, value: f64) {
        let i = match self.metrics.iter().position(|m| m.def.id == def.id) {
            Some(i) => i,
            None => {
                self.metrics.push(Metric {
                    def: def.clone(),
                    redis: Vec::new(),
                    partita: Vec::new(),
                });
                self.metrics.len() - 1
            }
        };
        if let Some(m) = self.metrics.get_mut(i) {
            match system {
                System::Redis => m.redis.push(value),
                System::Partita => m.partita.push(value),
            }
        }
    }

    /// Sets one system's cell of a W6 row.
    pub fn w6(&mut self, check: &str, system: System, outcome: &str, ok: bool) {
        let i = match self.w6.iter().position(|r| r.check == check) {
            Some(i) => i,
            None => {
                self.w6.push(W6Row {
                    check: check.into(),
                    redis: "not run".into(),
                    redis_ok: false,
                    partita: "not run".into(),
                    partita_ok: false,
                });
                self.w6.len() - 1
            }
        };
        if let Some(r) = self.w6.get_mut(i) {
            match system {
                System::Redis => (r.redis, r.redis_ok) = (outcome.into(), ok),
                System::Partita => (r.partita, r.partita_ok) = (outcome.into(), ok),
            }
        }
    }

    /// Whether every gate passed (and there was at least one).
    pub fn all_gates_passed(&self) -> bool {
        !self.gates.is_empty() && self.gates.iter().all(|g| g.passed)
    }

    fn median(&self, id: &str, system: System) -> Option<f64> {
        let m = self.metrics.iter().find(|m| m.def.id == id)?;
        let v = match system {
            System::Redis => &m.redis,
            System::Partita => &m.partita,
        };
        summarize(v).map(|s| s.median)
    }
}

/// One row of the summary: medians and the ratio.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// What was measured.
    pub def: MetricDef,
    /// Redis's runs.
    pub redis: Option<Summary>,
    /// Partita's runs.
    pub partita: Option<Summary>,
    /// Above 1: Partita wins.
    pub ratio: Option<Ratio>,
}

/// Summary rows: every measurement, then the replication cost (2 replicas / 0) per pipeline.
pub fn rows(res: &Results) -> Vec<Row> {
    let mut out: Vec<Row> = res
        .metrics
        .iter()
        .map(|m| {
            let (r, p) = (summarize(&m.redis), summarize(&m.partita));
            let ratio = match (r, p) {
                (Some(r), Some(p)) => Some(ratio(r.median, p.median, m.def.better)),
                _ => None,
            };
            Row {
                def: m.def.clone(),
                redis: r,
                partita: p,
                ratio,
            }
        })
        .collect();
    for depth in [16, 1] {
        let cost = |s| {
            let two = res.median(&format!("w1_r2_p{depth}_ops"), s)?;
            let zero = res.median(&format!("w1_r0_p{depth}_ops"), s)?;
            (zero > 0.0).then(|| two / zero)
        };
        let (r, p) = (cost(System::Redis), cost(System::Partita));
        if r.is_none() && p.is_none() {
            continue;
        }
        let one = |v: Option<f64>| {
            v.map(|m| Summary {
                median: m,
                min: m,
                max: m,
                n: 1,
            })
        };
        out.push(Row {
            def: MetricDef::new(
                &format!("w1_cost_p{depth}"),
                "W1",
                &format!("replication cost, pipeline {depth} (2 replicas / 0)"),
                "×",
                Better::Higher,
            ),
            redis: one(r),
            partita: one(p),
            ratio: match (r, p) {
                (Some(r), Some(p)) => Some(ratio(r, p, Better::Higher)),
                _ => None,
            },
        });
    }
    out
}

fn summary_json(s: Option<Summary>, samples: &[f64]) -> Value {
    match s {
        Some(s) => {
            json!({"median": s.median, "min": s.min, "max": s.max, "runs": s.n, "samples": samples})
        }
        None => Value::Null,
    }
}

/// The `--json` summary.
pub fn json(res: &Results, machine: &Value, config: &Value, elapsed_s: f64) -> Value {
    let metrics: Vec<Value> = rows(res)
        .into_iter()
        .map(|r| {
            let samples = res.metrics.iter().find(|m| m.def.id == r.def.id);
            let (rs, ps) = samples
                .map(|m| (m.redis.clone(), m.partita.clone()))
                .unwrap_or_default();
            json!({
                "id": r.def.id, "workload": r.def.workload, "label": r.def.label,
                "unit": r.def.unit, "better": r.def.better,
                "redis": summary_json(r.redis, &rs), "partita": summary_json(r.partita, &ps),
                "ratio": r.ratio.map_or(Value::Null, Ratio::json),
            })
        })
        .collect();
    let workloads: serde_json::Map<String, Value> = res
        .workloads
        .iter()
        .map(|w| {
            let gates: Vec<&Gate> = res.gates.iter().filter(|g| &g.workload == w).collect();
            let passed = gates.iter().filter(|g| g.passed).count();
            let measured = res.metrics.iter().filter(|m| &m.def.workload == w).count();
            (
                w.clone(),
                json!({
                    "gates": gates.len(), "gates_passed": passed,
                    "all_passed": !gates.is_empty() && passed == gates.len(),
                    "metrics": measured,
                }),
            )
        })
        .collect();
    let below: Vec<String> = rows(res)
        .iter()
        .filter(|r| r.ratio.is_some_and(|x| x.value() < 1.0))
        .map(|r| r.def.id.clone())
        .collect();
    json!({
        "tool": "partita-bench",
        "machine": machine,
        "config": config,
        "elapsed_s": elapsed_s,
        "all_gates_passed": res.all_gates_passed(),
        "workloads": workloads,
        "metrics": metrics,
        "ratios_below_1": below,
        "w6": res.w6,
        "gates": res.gates,
        "notes": res.notes,
    })
}

fn fmt_num(v: f64, unit: &str) -> String {
    if unit == "ops/s" || unit == "entries" || v >= 1000.0 {
        let n = v.round() as i64;
        let s = n.abs().to_string();
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        if n < 0 { format!("-{out}") } else { out }
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else if v >= 0.1 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn cell(s: Option<Summary>, unit: &str) -> String {
    match s {
        Some(s) if s.n > 1 => format!(
            "{} ({}–{})",
            fmt_num(s.median, unit),
            fmt_num(s.min, unit),
            fmt_num(s.max, unit)
        ),
        Some(s) => fmt_num(s.median, unit),
        None => "failed".into(),
    }
}

/// The Markdown section: a heading, the machine and commands (given as lines), one table of
/// medians (min–max) and ratios per workload, W6's table, and the gates.
pub fn markdown(res: &Results, heading: &str, preamble: &[String]) -> String {
    let mut md = vec![format!("## {heading}"), String::new()];
    md.extend(preamble.iter().cloned());
    md.push(String::new());
    let all = rows(res);
    for w in &res.workloads {
        let rs: Vec<&Row> = all.iter().filter(|r| &r.def.workload == w).collect();
        if rs.is_empty() {
            continue;
        }
        md.push(format!("**{w}**"));
        md.push(String::new());
        md.push("| measurement | unit | Redis | Partita | ratio |".into());
        md.push("| --- | --- | --- | --- | --- |".into());
        for r in rs {
            let ratio = r.ratio.map_or("n/a".into(), |x| {
                let t = x.display();
                if x.value() < 1.0 {
                    format!("**{t}** ⚠")
                } else {
                    format!("**{t}**")
                }
            });
            md.push(format!(
                "| {} | {} | {} | {} | {} |",
                r.def.label,
                r.def.unit,
                cell(r.redis, &r.def.unit),
                cell(r.partita, &r.def.unit),
                ratio
            ));
        }
        md.push(String::new());
    }
    if !res.w6.is_empty() {
        md.push("**W6: resync and failover (correctness, not a ratio)**".into());
        md.push(String::new());
        md.push("| check | Redis | Partita |".into());
        md.push("| --- | --- | --- |".into());
        let mark = |ok: bool| if ok { "✅" } else { "❌" };
        for r in &res.w6 {
            md.push(format!(
                "| {} | {} {} | {} {} |",
                r.check,
                mark(r.redis_ok),
                r.redis,
                mark(r.partita_ok),
                r.partita
            ));
        }
        md.push(String::new());
    }
    let failed: Vec<&Gate> = res.gates.iter().filter(|g| !g.passed).collect();
    md.push(format!(
        "Correctness gates: {} of {} passed (key count and digest equal on every copy{}).",
        res.gates.len() - failed.len(),
        res.gates.len(),
        ", and the exact expected key count"
    ));
    for g in failed {
        md.push(format!(
            "- FAILED, not timed: {} {} run {} {}: {}",
            g.workload,
            g.step,
            g.run,
            g.system.name(),
            g.detail
        ));
    }
    for n in &res.notes {
        md.push(format!("- {n}"));
    }
    md.join("\n") + "\n"
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sample() -> Results {
        let mut r = Results {
            workloads: vec!["W1".into(), "W6".into()],
            ..Results::default()
        };
        for (id, depth_replicas) in [("w1_r0_p16_ops", 0), ("w1_r2_p16_ops", 2)] {
            let d = MetricDef::new(id, "W1", id, "ops/s", Better::Higher);
            for v in [100.0, 110.0, 90.0] {
                r.record(&d, System::Redis, v * (3 - depth_replicas) as f64);
                r.record(&d, System::Partita, v * 2.0);
            }
        }
        let lat = MetricDef::new("w1_r0_p16_p99", "W1", "p99", "ms", Better::Lower);
        r.record(&lat, System::Redis, 1.0);
        r.record(&lat, System::Partita, 2.0);
        r.w6(
            "stale write refused",
            System::Redis,
            "accepted, then lost",
            false,
        );
        r.w6("stale write refused", System::Partita, "refused", true);
        r.gates.push(Gate {
            workload: "W1".into(),
            step: "pipeline 16".into(),
            run: 1,
            system: System::Redis,
            passed: true,
            keys: Some(10),
            detail: String::new(),
        });
        r
    }

    #[test]
    fn rows_have_medians_ratios_and_the_replication_cost() {
        let rows = rows(&sample());
        let ops = rows.iter().find(|r| r.def.id == "w1_r0_p16_ops").unwrap();
        assert_eq!(ops.redis.unwrap().median, 300.0);
        assert_eq!(ops.partita.unwrap().median, 200.0);
        assert_eq!(ops.ratio, Some(Ratio::Value(200.0 / 300.0)));
        let p99 = rows.iter().find(|r| r.def.id == "w1_r0_p16_p99").unwrap();
        assert_eq!(p99.ratio, Some(Ratio::Value(0.5)));
        let cost = rows.iter().find(|r| r.def.id == "w1_cost_p16").unwrap();
        // Redis 100/300, Partita 200/200: Partita's replication costs it nothing.
        assert_eq!(cost.ratio, Some(Ratio::Value(3.0)));
    }

    #[test]
    fn json_has_every_section_and_lists_ratios_below_one() {
        let j = json(&sample(), &json!({"cpus": 2}), &json!({"quick": true}), 1.5);
        assert_eq!(j["all_gates_passed"], json!(true));
        assert_eq!(j["workloads"]["W1"]["gates_passed"], json!(1));
        assert_eq!(j["workloads"]["W6"]["gates"], json!(0));
        let below: Vec<&str> = j["ratios_below_1"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(below, ["w1_r0_p16_ops", "w1_r0_p16_p99"]);
        assert_eq!(j["w6"][0]["partita_ok"], json!(true));
        assert!(j["metrics"][0]["redis"]["samples"].is_array());
    }

    #[test]
    fn markdown_has_a_table_per_workload_and_flags_losses() {
        let md = markdown(&sample(), "partita-bench", &["Machine: test".into()]);
        assert!(md.starts_with("## partita-bench\n\nMachine: test\n"));
        assert!(md.contains("| measurement | unit | Redis | Partita | ratio |"));
        assert!(
            md.contains("| w1_r0_p16_ops | ops/s | 300 (270–330) | 200 (180–220) | **0.67** ⚠ |")
        );
        assert!(md.contains("| stale write refused | ❌ accepted, then lost | ✅ refused |"));
        assert!(md.contains("Correctness gates: 1 of 1 passed"));
    }

    #[test]
    fn numbers_are_grouped_or_rounded_by_size() {
        assert_eq!(fmt_num(1234567.4, "ops/s"), "1,234,567");
        assert_eq!(fmt_num(12.345, "ms"), "12.3");
        assert_eq!(fmt_num(0.1234, "ms"), "0.12");
        assert_eq!(fmt_num(0.01234, "ms"), "0.012");
    }
}
