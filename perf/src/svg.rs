//! A bar chart written by hand: one group per (workload, MTU, direction), a
//! bar per engine, each group on its own scale (the units differ), the
//! median printed on every bar.

use crate::model::{Better, EngineKind, Workload};
use crate::report::{engines_present, format_value, rows, Key, Summary};
use std::collections::BTreeMap;
use std::fmt::Write;

const BAR_W: u32 = 18;
const BAR_GAP: u32 = 4;
const GROUP_PAD: u32 = 26;
const BAR_AREA: u32 = 150;
/// Room above the bars for the rotated value labels.
const HEADROOM: u32 = 80;
const LABEL_AREA: u32 = 44;
const MAX_WIDTH: u32 = 1400;
const MIN_GROUP_W: u32 = 180;
const MARGIN: u32 = 20;
const LEGEND_H: u32 = 56;

fn color(e: EngineKind) -> &'static str {
    match e {
        EngineKind::Ours => "#d62728",
        EngineKind::OursTap => "#ff7f0e",
        EngineKind::Other => "#9467bd",
        EngineKind::Slirp4netns => "#1f77b4",
        EngineKind::Pasta => "#2ca02c",
        EngineKind::Veth => "#7f7f7f",
        EngineKind::Loopback => "#c7c7c7",
    }
}

/// Escapes text for SVG.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(c),
        }
    }
    out
}

/// The label on a bar: the table's value, shorter where it would not fit.
fn bar_label(s: &Summary) -> String {
    match (s.workload, s.median, s.median_lost_percent) {
        (Workload::Udp, Some(v), Some(loss)) => format!("{v:.2} / {loss:.1}%"),
        _ => format_value(s),
    }
}

/// Height in pixels of a bar of `value` in a group whose largest is `max`.
fn bar_height(value: f64, max: f64) -> u32 {
    if max.is_nan() || value.is_nan() || max <= 0.0 || value <= 0.0 {
        return 0;
    }
    let frac = (value / max).clamp(0.0, 1.0);
    // Whole pixels, at least one for any positive value.
    let mut h = 1;
    while h < BAR_AREA && f64::from(h) < frac * f64::from(BAR_AREA) {
        h += 1;
    }
    h
}

pub fn chart(summaries: &BTreeMap<Key, Summary>, workloads: &[Workload], title: &str) -> String {
    let engines = engines_present(summaries);
    let groups = rows(summaries, workloads);
    let n = u32::try_from(engines.len()).unwrap_or(1).max(1);
    // Wide enough for the group's label too.
    let group_w = (n * (BAR_W + BAR_GAP) + GROUP_PAD).max(MIN_GROUP_W);
    let per_row = ((MAX_WIDTH - 2 * MARGIN) / group_w).max(1);
    let rows_n = u32::try_from(groups.len())
        .unwrap_or(1)
        .div_ceil(per_row)
        .max(1);
    let width = (per_row.min(u32::try_from(groups.len()).unwrap_or(1).max(1)) * group_w
        + 2 * MARGIN)
        .max(640);
    let row_h = HEADROOM + BAR_AREA + LABEL_AREA;
    let height = LEGEND_H + rows_n * row_h + MARGIN;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif">"#
    );
    let _ = writeln!(
        out,
        r#"<rect x="0" y="0" width="{width}" height="{height}" fill="white"/>"#
    );
    let _ = writeln!(
        out,
        r#"<text x="{MARGIN}" y="22" font-size="15" font-weight="bold">{}</text>"#,
        escape(title)
    );
    // Legend.
    let mut x = MARGIN;
    for &e in &engines {
        let _ = writeln!(
            out,
            r#"<rect x="{x}" y="34" width="12" height="12" fill="{}"/><text x="{}" y="45" font-size="12">{}</text>"#,
            color(e),
            x + 16,
            escape(e.name())
        );
        x += 16 + 7 * u32::try_from(e.name().len()).unwrap_or(8) + 16;
    }
    for (i, (w, mtu, dir)) in groups.iter().enumerate() {
        let i = u32::try_from(i).unwrap_or(0);
        let gx = MARGIN + (i % per_row) * group_w;
        let top = LEGEND_H + (i / per_row) * row_h;
        let base = top + HEADROOM + BAR_AREA;
        let cells: Vec<(EngineKind, Option<&Summary>)> = engines
            .iter()
            .map(|&e| {
                (
                    e,
                    summaries.get(&Key {
                        workload: *w,
                        mtu: *mtu,
                        direction: *dir,
                        engine: e,
                    }),
                )
            })
            .collect();
        let max = cells
            .iter()
            .filter_map(|(_, s)| s.and_then(|s| s.median))
            .fold(0.0_f64, f64::max);
        let _ = writeln!(
            out,
            r#"<line x1="{gx}" y1="{base}" x2="{}" y2="{base}" stroke="black" stroke-width="1"/>"#,
            gx + group_w - GROUP_PAD / 2
        );
        for (j, (e, s)) in cells.iter().enumerate() {
            let j = u32::try_from(j).unwrap_or(0);
            let bx = gx + 4 + j * (BAR_W + BAR_GAP);
            let cx = bx + BAR_W / 2;
            match s {
                Some(s) if s.median.is_some() => {
                    let v = s.median.unwrap_or(0.0);
                    let h = bar_height(v, max);
                    let _ = writeln!(
                        out,
                        r#"<rect x="{bx}" y="{}" width="{BAR_W}" height="{h}" fill="{}"><title>{}</title></rect>"#,
                        base - h,
                        color(*e),
                        escape(&format!("{e}: {} {}", format_value(s), s.unit))
                    );
                    let ly = base - h - 3;
                    let _ = writeln!(
                        out,
                        r#"<text x="{}" y="{ly}" font-size="10" transform="rotate(-90 {} {ly})">{}</text>"#,
                        cx + 3,
                        cx + 3,
                        escape(&bar_label(s))
                    );
                }
                Some(_) => {
                    let ly = base - 3;
                    let _ = writeln!(
                        out,
                        r#"<text x="{}" y="{ly}" font-size="10" fill="{}" transform="rotate(-90 {} {ly})">failed</text>"#,
                        cx + 3,
                        color(*e),
                        cx + 3
                    );
                }
                None => {}
            }
        }
        let lower = if w.better() == Better::Lower {
            ", lower is better"
        } else {
            ""
        };
        let dir_text = if *w == Workload::Ping {
            "guest→gw".to_string()
        } else {
            dir.arrow().to_string()
        };
        let _ = writeln!(
            out,
            r#"<text x="{gx}" y="{}" font-size="11" font-weight="bold">{}</text>"#,
            base + 15,
            escape(w.label())
        );
        let _ = writeln!(
            out,
            r#"<text x="{gx}" y="{}" font-size="10">{}</text>"#,
            base + 28,
            escape(&format!("MTU {mtu}, {dir_text}"))
        );
        let _ = writeln!(
            out,
            r##"<text x="{gx}" y="{}" font-size="10" fill="#555">{}</text>"##,
            base + 40,
            escape(&format!(
                "{}{}{lower}",
                w.unit(),
                if *w == Workload::Udp { " / loss" } else { "" }
            ))
        );
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Direction, Metrics, RunRecord};
    use crate::report::summarize;

    fn rec(engine: EngineKind, w: Workload, mtu: u32, v: Option<f64>) -> RunRecord {
        RunRecord {
            engine,
            workload: w,
            direction: Direction::GuestToHost,
            mtu,
            guest_mtu: None,
            rep: 1,
            duration_s: 1,
            started_unix_ms: 0,
            wall_s: 1.0,
            ok: v.is_some(),
            error: v.is_none().then(|| "boom".to_string()),
            metrics: Metrics {
                gbps: v,
                rate_per_s: v,
                p50_us: v,
                ..Metrics::default()
            },
            cost: None,
        }
    }

    #[test]
    fn bars_scale_within_their_group() {
        assert_eq!(bar_height(10.0, 10.0), BAR_AREA);
        assert_eq!(bar_height(5.0, 10.0), BAR_AREA / 2);
        assert_eq!(bar_height(0.0001, 10.0), 1);
        assert_eq!(bar_height(0.0, 10.0), 0);
        assert_eq!(bar_height(1.0, 0.0), 0);
        assert_eq!(bar_height(f64::NAN, 1.0), 0);
    }

    #[test]
    fn chart_has_a_bar_per_engine_and_a_group_per_row() {
        let records = vec![
            rec(EngineKind::Ours, Workload::Tcp, 1500, Some(4.0)),
            rec(EngineKind::Pasta, Workload::Tcp, 1500, Some(2.0)),
            rec(EngineKind::Ours, Workload::Tcp, 65520, Some(8.0)),
            rec(EngineKind::Pasta, Workload::Tcp, 65520, None),
            rec(EngineKind::Ours, Workload::Ping, 1500, Some(50.0)),
        ];
        let svg = chart(
            &summarize(&records),
            &[Workload::Tcp, Workload::Ping],
            "a <b> & c",
        );
        assert!(svg.starts_with("<svg "));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("a &lt;b&gt; &amp; c"));
        // Bars: 2 + 1 + 1, plus the background and 2 legend squares.
        assert_eq!(svg.matches("<rect ").count(), 4 + 1 + 2);
        assert_eq!(svg.matches(">failed</text>").count(), 1);
        assert!(svg.contains("MTU 65520, guest→host"));
        assert!(svg.contains("lower is better"));
        // Tags balance.
        assert_eq!(svg.matches("<text").count(), svg.matches("</text>").count());
    }
}
