//! A finished benchmark: the `--json` document and its fairness notes.

use serde::{Deserialize, Serialize};

use super::machine::Machine;
use super::{BenchPlan, BenchResult};

/// The whole benchmark (`minerva bench --json` prints exactly this).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Where it ran.
    pub machine: Machine,
    /// What every model was asked to do.
    pub plan: BenchPlan,
    /// CPU threads per model.
    pub threads: usize,
    /// Context size per model.
    pub context_size: u32,
    /// One row per model, in the order given.
    pub results: Vec<BenchResult>,
    /// Things that make the figures less comparable.
    pub notes: Vec<String>,
}

impl Report {
    /// Assemble a report and work out its notes.
    pub fn new(
        machine: Machine,
        plan: BenchPlan,
        threads: usize,
        context_size: u32,
        results: Vec<BenchResult>,
    ) -> Report {
        let mut notes: Vec<String> = machine.busy_warning().into_iter().collect();
        let ok: Vec<&BenchResult> = results.iter().filter(|r| r.error.is_none()).collect();
        let mut prints: Vec<&str> = ok
            .iter()
            .filter_map(|r| r.prompt_fingerprint.as_deref())
            .collect();
        prints.sort_unstable();
        prints.dedup();
        if prints.len() > 1 {
            let counts = ok
                .iter()
                .map(|r| format!("{}: {}", r.model, r.prompt_tokens.unwrap_or(0)))
                .collect::<Vec<_>>()
                .join(", ");
            notes.push(format!(
                "the models' tokenizers disagree, so their prompts differ (prompt tokens: {counts})"
            ));
        } else if ok.len() > 1 {
            notes.push("every model got the same prompt token ids".into());
        }
        Report {
            machine,
            plan,
            threads,
            context_size,
            results,
            notes,
        }
    }
}
