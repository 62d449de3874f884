//! `minerva bench`'s report as text: header lines, an aligned table, Markdown.

use minerva_bench::report::Report;
use minerva_bench::{BenchPrompt, Spread};

/// The header lines: machine, settings, notes.
pub fn header(report: &Report) -> Vec<String> {
    let m = &report.machine;
    let prompt = match &report.plan.prompt {
        BenchPrompt::Text(t) => format!("{} chars of text", t.chars().count()),
        BenchPrompt::Tokens(n) => format!("{n} tokens"),
    };
    let mut lines = vec![
        format!(
            "machine: {} ({} physical / {} logical cores, {} {}), load average {}",
            m.cpu,
            m.physical_cores,
            m.logical_cores,
            m.os,
            m.arch,
            m.load_average.map_or("?".into(), |l| format!("{l:.2}"))
        ),
        format!(
            "plan: prompt {prompt}, generate {} tokens ({}, end-of-sequence ignored), \
                 {} reps after {} warm-up, cold prompt each rep, depth {}, {} threads, context {}",
            report.plan.tg,
            report.plan.decoding(),
            report.plan.reps,
            report.plan.warmup,
            report.plan.depth,
            report.threads,
            report.context_size
        ),
    ];
    for r in report.results.iter().filter(|r| r.error.is_none()) {
        lines.push(format!(
            "{}: {} ({}) on {}, {} {}, {:.2} bits/weight",
            r.model,
            r.engine.as_deref().unwrap_or("?"),
            r.engine_version.as_deref().unwrap_or("?"),
            r.device.as_deref().unwrap_or("?"),
            r.format.as_deref().unwrap_or("?"),
            r.quantization.as_deref().unwrap_or("?"),
            r.bits_per_weight.unwrap_or(0.0)
        ));
    }
    lines.extend(report.notes.iter().map(|n| format!("note: {n}")));
    lines
}

/// Table rows as cells: header first.
fn rows(report: &Report) -> Vec<Vec<String>> {
    let mut rows = vec![[
        "model",
        "engine",
        "prompt",
        "load s",
        "TTFT s",
        "pp tok/s",
        "tg tok/s",
        "peak RSS",
        "KV cache",
        "engine memory",
    ]
    .map(String::from)
    .to_vec()];
    for r in &report.results {
        if let Some(e) = &r.error {
            rows.push(vec![r.model.clone(), "error".into(), e.clone()]);
            continue;
        }
        rows.push(vec![
            r.model.clone(),
            r.engine.clone().unwrap_or_default(),
            r.prompt_tokens.map_or(String::new(), |n| n.to_string()),
            r.load_s.map_or(String::new(), |s| format!("{s:.2}")),
            spread(r.ttft_s, 3),
            spread(r.pp_tps, 1),
            spread(r.tg_tps, 1),
            r.peak_rss_bytes
                .map_or(String::new(), |b| format!("{:.0} MB", b as f64 / 1e6)),
            r.kv_cache.as_ref().map_or(String::new(), |kv| {
                format!("{} {:.0} MB", kv.kv_type, kv.bytes as f64 / 1e6)
            }),
            r.engine_memory.as_ref().map_or(String::new(), |m| {
                format!("{:.0} MB ({})", m.bytes as f64 / 1e6, m.what)
            }),
        ]);
    }
    rows
}

/// Plain-text table with aligned columns.
pub fn text_table(report: &Report) -> String {
    let rows = rows(report);
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| {
            rows.iter()
                .filter(|r| r.len() == rows[0].len())
                .map(|r| r[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    rows.iter()
        .map(|row| {
            row.iter()
                .enumerate()
                .map(
                    |(i, cell)| match (row.len() == widths.len(), widths.get(i)) {
                        (true, Some(w)) => format!("{cell:<w$}"),
                        _ => cell.clone(),
                    },
                )
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// GitHub-flavoured Markdown: header lines as a list, then the table.
pub fn markdown(report: &Report) -> String {
    let mut out: Vec<String> = header(report).iter().map(|l| format!("- {l}")).collect();
    out.push(String::new());
    let rows = rows(report);
    let columns = rows[0].len();
    for (i, row) in rows.iter().enumerate() {
        let mut cells = row.clone();
        cells.resize(columns, String::new());
        out.push(format!("| {} |", cells.join(" | ").replace('\n', " ")));
        if i == 0 {
            out.push(format!("|{}", "---|".repeat(columns)));
        }
    }
    out.join("\n")
}

/// "median (min-max)".
fn spread(s: Option<Spread>, decimals: usize) -> String {
    match s {
        Some(s) => format!(
            "{:.d$} ({:.d$}-{:.d$})",
            s.median,
            s.min,
            s.max,
            d = decimals
        ),
        None => String::new(),
    }
}
