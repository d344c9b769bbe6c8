//! The page: one self-contained HTML file, its charts as inline SVG drawn here, with no script
//! and a Content-Security-Policy that allows none, so that it opens anywhere (a mail
//! attachment, a ticket) and no text from the network can run in it. Every text that came from
//! the network or another process passes `text`: terminal-unsafe characters made visible
//! (`render::escape`), then HTML-escaped.

use std::fmt::Write as _;

use sensor_core::event::{Timestamp, Verdict};
use sensor_host::render;

use super::summary::{Counts, Group, Summary, VERDICTS};

/// The colour of each verdict, in [`VERDICTS`]' order. The page's test looks for these
/// exact colours in Chromium's screenshot.
pub const COLOURS: [&str; VERDICTS.len()] = ["#c62828", "#6a1b9a", "#ef6c00", "#78909c", "#2e7d32"];

fn colour(v: Verdict) -> &'static str {
    VERDICTS
        .iter()
        .position(|x| *x == v)
        .map_or(COLOURS[3], |i| COLOURS[i])
}

/// Text from outside, safe in HTML text and in quoted attributes.
pub fn text(s: &str) -> String {
    let s = render::escape(s);
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn time(secs: i64) -> String {
    render::time(Timestamp::from_seconds_nanos(secs, 0))
}

const STYLE: &str = "
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#212121;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.sub{color:#616161}.cards{display:flex;gap:12px;flex-wrap:wrap;margin:16px 0}
.card{border:1px solid #e0e0e0;border-radius:6px;padding:8px 14px;min-width:110px}
.card b{display:block;font-size:24px}.warn{background:#fff3e0;border:1px solid #ef6c00;padding:8px;border-radius:6px}
table{border-collapse:collapse;width:100%;max-width:1100px}td,th{padding:3px 8px;text-align:left;vertical-align:top;border-bottom:1px solid #eeeeee}
th{font-weight:600;color:#424242}td.n{text-align:right;font-variant-numeric:tabular-nums}
.legend span{display:inline-block;margin-right:14px}.legend i{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:-1px}
.mono{font-family:ui-monospace,monospace;font-size:13px;overflow-wrap:anywhere}.t{white-space:nowrap}.expl{color:#424242}
.cols{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:0 32px}
";

/// The page for a summary, generated at `now` (epoch seconds).
pub fn page(s: &Summary, now: i64) -> String {
    let mut h = String::with_capacity(64 * 1024);
    h.push_str(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n\
         <meta name=\"viewport\" content=\"width=device-width\">\n\
         <title>TLS interception report</title>\n<style>",
    );
    h.push_str(STYLE);
    h.push_str("</style></head><body>\n<h1>TLS interception report</h1>\n");
    let hosts = match s.hosts.len() {
        0 => "no host named".to_owned(),
        1..=5 => s
            .hosts
            .iter()
            .map(|h| text(h))
            .collect::<Vec<_>>()
            .join(", "),
        n => format!("{n} hosts"),
    };
    let _ = writeln!(
        h,
        "<p class=\"sub\">{hosts} · {} to {} · made {} by sensorctl {}</p>",
        time(s.from),
        time(s.to),
        time(now),
        text(sensor_host::VERSION),
    );
    if s.truncated {
        let _ = writeln!(
            h,
            "<p class=\"warn\">More events matched than were read ({}): this page covers the \
             oldest of them. Narrow the window (<code>--since</code>) or raise <code>--limit</code>.</p>",
            s.events
        );
    }
    cards(&mut h, &s.totals);
    h.push_str("<h2>Verdicts over time</h2>\n");
    legend(&mut h);
    timeline(&mut h, s);
    h.push_str("<div class=\"cols\">\n");
    table(
        &mut h,
        "Interception by product",
        "product",
        &s.products,
        "No event named a known interception product.",
    );
    table(
        &mut h,
        "Chains not judged clean, by issuer",
        "issuer",
        &s.issuers,
        "Every chain with an issuer was clean.",
    );
    table(&mut h, "By process", "process", &s.programs, "No events.");
    table(
        &mut h,
        "By destination",
        "destination",
        &s.destinations,
        "No events.",
    );
    h.push_str("</div>\n");
    newest(&mut h, s);
    h.push_str("</body></html>\n");
    h
}

fn cards(h: &mut String, totals: &Counts) {
    h.push_str("<div class=\"cards\">");
    let _ = write!(
        h,
        "<div class=\"card\"><b>{}</b>handshakes</div>",
        totals.total()
    );
    for (v, c) in VERDICTS.iter().zip(COLOURS) {
        let _ = write!(
            h,
            "<div class=\"card\" style=\"border-left:6px solid {c}\"><b>{}</b>{}</div>",
            totals.of(*v),
            v.as_str()
        );
    }
    h.push_str("</div>\n");
}

fn legend(h: &mut String) {
    h.push_str("<p class=\"legend\">");
    for (v, c) in VERDICTS.iter().zip(COLOURS) {
        let _ = write!(
            h,
            "<span><i style=\"background:{c}\"></i>{}</span>",
            v.as_str()
        );
    }
    h.push_str("</p>\n");
}

/// The verdicts present in `counts`, in [`VERDICTS`]' order, with their count and their length
/// in whole pixels (at least one), so that the fills are exact colours.
fn segments(counts: &Counts, scale: f64) -> impl Iterator<Item = (usize, u64, i64)> + '_ {
    counts
        .0
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .map(move |(i, n)| (i, *n, ((*n as f64 * scale).round() as i64).max(1)))
}

/// A stacked bar, worst verdict at the bottom.
fn stack(h: &mut String, counts: &Counts, x: i64, w: i64, bottom: i64, scale: f64) {
    let mut y = bottom;
    for (i, n, px) in segments(counts, scale) {
        y -= px;
        let _ = write!(
            h,
            "<rect x=\"{x}\" y=\"{y}\" width=\"{w}\" height=\"{px}\" fill=\"{}\"><title>{} {}</title></rect>",
            COLOURS[i],
            n,
            VERDICTS[i].as_str()
        );
    }
}

fn timeline(h: &mut String, s: &Summary) {
    const W: i64 = 960;
    const H: i64 = 220;
    const LEFT: i64 = 48;
    const BOTTOM: i64 = 196;
    let t = &s.timeline;
    let n = t.buckets.len().max(1) as i64;
    let slot = ((W - LEFT - 8) / n).max(2);
    let bar = (slot - 2).max(1);
    let max = t
        .buckets
        .iter()
        .map(Counts::total)
        .max()
        .unwrap_or(0)
        .max(1);
    let scale = (BOTTOM - 12) as f64 / max as f64;
    let _ = write!(
        h,
        "<svg id=\"timeline\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\" \
         aria-label=\"verdicts over time\" font-size=\"11\" fill=\"#616161\">"
    );
    let _ = write!(
        h,
        "<line x1=\"{LEFT}\" y1=\"{BOTTOM}\" x2=\"{W}\" y2=\"{BOTTOM}\" stroke=\"#bdbdbd\"/>\
         <text x=\"{}\" y=\"16\" text-anchor=\"end\">{max}</text>\
         <text x=\"{}\" y=\"{BOTTOM}\" text-anchor=\"end\">0</text>",
        LEFT - 6,
        LEFT - 6
    );
    for (i, b) in t.buckets.iter().enumerate() {
        let x = LEFT + i as i64 * slot + 1;
        stack(h, b, x, bar, BOTTOM, scale);
    }
    let per = match t.width {
        w if w % 86_400 == 0 => format!("{} d", w / 86_400),
        w if w % 3600 == 0 => format!("{} h", w / 3600),
        w => format!("{} min", w / 60),
    };
    let _ = writeln!(
        h,
        "<text x=\"{LEFT}\" y=\"{}\">{}</text><text x=\"{W}\" y=\"{}\" text-anchor=\"end\">{} · a bar per {per}</text></svg>",
        H - 6,
        time(t.start),
        H - 6,
        time(s.to),
    );
}

fn table(h: &mut String, title: &str, what: &str, groups: &(Vec<Group>, usize), none: &str) {
    let _ = writeln!(h, "<section><h2>{title}</h2>");
    let (groups, left) = groups;
    if groups.is_empty() {
        let _ = writeln!(h, "<p class=\"sub\">{none}</p></section>");
        return;
    }
    let max = groups
        .iter()
        .map(|g| g.counts.total())
        .max()
        .unwrap_or(1)
        .max(1);
    let _ = write!(
        h,
        "<table><tr><th>{what}</th><th>events</th><th>not clean</th><th></th></tr>"
    );
    for g in groups {
        const W: i64 = 200;
        let _ = write!(
            h,
            "<tr><td class=\"mono\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>\
             <svg width=\"{W}\" height=\"12\">",
            text(&g.name),
            g.counts.total(),
            g.counts.not_clean()
        );
        let mut x = 0;
        for (i, _, px) in segments(&g.counts, W as f64 / max as f64) {
            let _ = write!(
                h,
                "<rect x=\"{x}\" y=\"0\" width=\"{px}\" height=\"12\" fill=\"{}\"/>",
                COLOURS[i]
            );
            x += px;
        }
        h.push_str("</svg></td></tr>");
    }
    h.push_str("</table>");
    if *left > 0 {
        let _ = write!(h, "<p class=\"sub\">and {left} more</p>");
    }
    h.push_str("</section>\n");
}

fn newest(h: &mut String, s: &Summary) {
    h.push_str("<h2>Newest high and critical events</h2>\n");
    if s.newest.is_empty() {
        h.push_str("<p class=\"sub\">None in this window.</p>\n");
        return;
    }
    h.push_str(
        "<table id=\"newest\"><tr><th>time</th><th>verdict</th><th>process</th><th>destination</th><th>why</th></tr>",
    );
    for r in &s.newest {
        let verdict = r.verdict.unwrap_or(Verdict::Unverified);
        let _ = write!(
            h,
            "<tr><td class=\"mono t\">{}<br>seq {}</td><td><b style=\"color:{}\">{}</b><br>{}</td>\
             <td class=\"mono\">{}</td><td class=\"mono\">{}</td><td>{}<div class=\"expl\">{}</div></td></tr>",
            render::time(r.time),
            r.seq,
            colour(verdict),
            verdict.as_str(),
            r.severity.map_or("", |s| s.as_str()),
            text(&r.process),
            text(&r.destination),
            text(&r.why),
            text(&r.explanation),
        );
    }
    h.push_str("</table>\n");
}

#[cfg(test)]
mod tests {
    use sensor_core::event::Severity;

    use super::*;
    use crate::report::summary::{Builder, Row};

    #[test]
    fn text_from_outside_cannot_make_markup() {
        assert_eq!(
            text("<script>alert('x')</script>&\"\u{202e}"),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;\\u{202e}"
        );
    }

    #[test]
    fn the_page_holds_every_group_and_no_markup_from_outside() {
        let mut b = Builder::new(0, 3600);
        b.add(Row {
            seq: 7,
            time: Timestamp::from_seconds_nanos(100, 0),
            verdict: Some(Verdict::Intercepted),
            severity: Some(Severity::High),
            program: "curl".into(),
            process: "curl[5]".into(),
            destination: "<img src=x onerror=alert(1)>:443".into(),
            issuer: Some("Evil \"CA\"".into()),
            product: Some("mitmproxy".into()),
            why: "issuer".into(),
            explanation: "re-signed</td><script>".into(),
            host: Some("web-1".into()),
            count: 1,
        });
        let p = page(&b.finish(false), 3600);
        assert!(!p.contains("<img") && !p.contains("<script"), "{p}");
        assert!(p.contains("&lt;img src=x onerror=alert(1)&gt;:443"));
        assert!(p.contains("Evil &quot;CA&quot;"));
        assert!(p.contains("default-src 'none'"));
        assert!(p.contains(">mitmproxy<"));
        assert!(p.contains("web-1"));
        assert!(
            p.contains("fill=\"#c62828\""),
            "the intercepted colour is drawn"
        );
        assert!(p.contains("seq 7"));
        // Balanced: every table and svg opened is closed.
        for tag in ["table", "svg", "section", "tr"] {
            assert_eq!(
                p.matches(&format!("<{tag}")).count(),
                p.matches(&format!("</{tag}>")).count(),
                "{tag}"
            );
        }
    }
}
