//! The benchmark as an SVG chart: one panel for prompt processing and one for generation,
//! a bar per model with its engine's colour, min-max whiskers and the median written on it.

use std::fmt::Write;

use minerva_bench::report::Report;
use minerva_bench::{BenchResult, Spread};

const PANEL_W: f64 = 420.0;
const PANEL_H: f64 = 260.0;
const MARGIN: f64 = 50.0;
const LEGEND_H: f64 = 30.0;

/// Picks one figure of a result.
type Figure = fn(&BenchResult) -> Option<Spread>;

/// Colour of an engine's bars.
fn colour(engine: &str) -> &'static str {
    match engine {
        "llama" => "#4C72B0",
        "mlx" => "#DD8452",
        _ => "#55A868",
    }
}

/// Escape text for SVG.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Render `report` as a standalone SVG document.
pub fn svg(report: &Report) -> String {
    let ok: Vec<_> = report
        .results
        .iter()
        .filter(|r| r.error.is_none())
        .collect();
    let width = MARGIN * 2.0 + PANEL_W * 2.0 + MARGIN;
    let height = MARGIN * 2.0 + PANEL_H + LEGEND_H + 40.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let title = format!(
        "minerva bench: {} ({} cores), tg {} tokens, {} reps",
        report.machine.cpu, report.machine.logical_cores, report.plan.tg, report.plan.reps
    );
    let _ = writeln!(
        s,
        r#"<text x="{MARGIN}" y="24" font-size="14" font-weight="bold">{}</text>"#,
        esc(&title)
    );
    let panels: [(&str, Figure); 2] = [
        ("prompt processing (tok/s)", |r| r.pp_tps),
        ("generation (tok/s)", |r| r.tg_tps),
    ];
    for (p, (label, figure)) in panels.iter().enumerate() {
        let x0 = MARGIN + p as f64 * (PANEL_W + MARGIN);
        let y0 = MARGIN;
        let top = ok
            .iter()
            .filter_map(|r| figure(r).map(|f| f.max))
            .fold(0.0, f64::max)
            .max(1e-9)
            * 1.15;
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle" font-weight="bold">{}</text>"#,
            x0 + PANEL_W / 2.0,
            y0 - 8.0,
            esc(label)
        );
        let _ = writeln!(
            s,
            r##"<line x1="{x0}" y1="{}" x2="{}" y2="{}" stroke="#333"/>"##,
            y0 + PANEL_H,
            x0 + PANEL_W,
            y0 + PANEL_H
        );
        let slot = PANEL_W / ok.len().max(1) as f64;
        for (i, r) in ok.iter().enumerate() {
            let Some(f) = figure(r) else { continue };
            let engine = r.engine.as_deref().unwrap_or("?");
            let y = |v: f64| y0 + PANEL_H - v / top * PANEL_H;
            let bx = x0 + slot * i as f64 + slot * 0.2;
            let bw = slot * 0.6;
            let _ = writeln!(
                s,
                r#"<rect x="{bx:.1}" y="{:.1}" width="{bw:.1}" height="{:.1}" fill="{}"><title>{}</title></rect>"#,
                y(f.median),
                y0 + PANEL_H - y(f.median),
                colour(engine),
                esc(&format!(
                    "{} ({engine}): median {:.1}, min {:.1}, max {:.1}",
                    r.model, f.median, f.min, f.max
                ))
            );
            let cx = bx + bw / 2.0;
            let _ = writeln!(
                s,
                r##"<path d="M{cx:.1},{:.1}V{:.1}M{:.1},{:.1}H{:.1}M{:.1},{:.1}H{:.1}" stroke="#000" fill="none"/>"##,
                y(f.min),
                y(f.max),
                cx - 6.0,
                y(f.min),
                cx + 6.0,
                cx - 6.0,
                y(f.max),
                cx + 6.0
            );
            let _ = writeln!(
                s,
                r#"<text x="{cx:.1}" y="{:.1}" text-anchor="middle">{:.1}</text>"#,
                y(f.max) - 6.0,
                f.median
            );
            let name = std::path::Path::new(&r.model)
                .file_name()
                .map_or(r.model.clone(), |n| n.to_string_lossy().into_owned());
            let _ = writeln!(
                s,
                r#"<text x="{cx:.1}" y="{:.1}" text-anchor="middle" font-size="10">{}</text>"#,
                y0 + PANEL_H + 14.0,
                esc(&format!("{engine}: {}", shorten(&name, 28)))
            );
        }
    }
    let mut engines: Vec<&str> = ok.iter().filter_map(|r| r.engine.as_deref()).collect();
    engines.sort_unstable();
    engines.dedup();
    let ly = MARGIN + PANEL_H + 40.0;
    for (i, engine) in engines.iter().enumerate() {
        let lx = MARGIN + i as f64 * 120.0;
        let _ = writeln!(
            s,
            r#"<rect x="{lx}" y="{}" width="12" height="12" fill="{}"/><text x="{}" y="{}">{}</text>"#,
            ly - 10.0,
            colour(engine),
            lx + 18.0,
            ly,
            esc(engine)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{MARGIN}" y="{}" font-size="10">bars: median; whiskers: min-max</text>"#,
        ly + 20.0
    );
    s.push_str("</svg>\n");
    s
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(max - 1).collect::<String>())
    }
}
