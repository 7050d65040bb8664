//! etcdutl's output formats for `snapshot status`.

use crate::snapshot::Status;
use crate::Format;

pub fn status(s: &Status, format: Format) {
    print!("{}", render(s, format));
}

pub fn render(s: &Status, format: Format) -> String {
    match format {
        Format::Simple => format!(
            "{:x}, {}, {}, {}\n",
            s.hash,
            s.revision,
            s.total_keys,
            human_bytes(s.total_size)
        ),
        Format::Json => format!(
            "{{\"hash\":{},\"revision\":{},\"totalKey\":{},\"totalSize\":{}}}\n",
            s.hash, s.revision, s.total_keys, s.total_size
        ),
        Format::Fields => format!(
            "\"Hash\" : {}\n\"Revision\" : {}\n\"Keys\" : {}\n\"Size\" : {}\n",
            s.hash, s.revision, s.total_keys, s.total_size
        ),
        Format::Table => table(
            &["HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE"],
            &[
                format!("{:x}", s.hash),
                s.revision.to_string(),
                s.total_keys.to_string(),
                human_bytes(s.total_size),
            ],
        ),
    }
}

/// One-row table as etcdctl draws it: centred headers, right-aligned cells.
fn table(headers: &[&str], row: &[String]) -> String {
    let widths: Vec<usize> = headers
        .iter()
        .zip(row)
        .map(|(h, c)| h.len().max(c.len()))
        .collect();
    let rule = {
        let mut s = String::from("+");
        for w in &widths {
            s.push_str(&"-".repeat(w + 2));
            s.push('+');
        }
        s.push('\n');
        s
    };
    let mut out = rule.clone();
    out.push('|');
    for (h, w) in headers.iter().zip(&widths) {
        let gap = w - h.len();
        let left = gap / 2;
        out.push_str(&format!(
            " {}{}{} |",
            " ".repeat(left),
            h,
            " ".repeat(gap - left)
        ));
    }
    out.push('\n');
    out.push_str(&rule);
    out.push('|');
    for (c, w) in row.iter().zip(&widths) {
        out.push_str(&format!(" {c:>w$} |"));
    }
    out.push('\n');
    out.push_str(&rule);
    out
}

/// Sizes as etcd prints them (SI units, one decimal below 10).
pub fn human_bytes(n: u64) -> String {
    if n < 10 {
        return format!("{n} B");
    }
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let e = ((n as f64).ln() / 1000f64.ln()).floor() as usize;
    let e = e.min(UNITS.len() - 1);
    let val = (n as f64 / 1000f64.powi(e as i32) * 10.0 + 0.5).floor() / 10.0;
    if val < 10.0 {
        format!("{val:.1} {}", UNITS[e])
    } else {
        format!("{val:.0} {}", UNITS[e])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_match_etcdutl() {
        let s = Status {
            hash: 3117903429,
            revision: 11,
            total_keys: 14,
            total_size: 1032192,
        };
        assert_eq!(render(&s, Format::Simple), "b9d76e45, 11, 14, 1.0 MB\n");
        assert_eq!(
            render(&s, Format::Json),
            "{\"hash\":3117903429,\"revision\":11,\"totalKey\":14,\"totalSize\":1032192}\n"
        );
        assert_eq!(
            render(&s, Format::Table),
            "+----------+----------+------------+------------+\n\
             |   HASH   | REVISION | TOTAL KEYS | TOTAL SIZE |\n\
             +----------+----------+------------+------------+\n\
             | b9d76e45 |       11 |         14 |     1.0 MB |\n\
             +----------+----------+------------+------------+\n"
        );
        assert_eq!(
            render(&s, Format::Fields),
            "\"Hash\" : 3117903429\n\"Revision\" : 11\n\"Keys\" : 14\n\"Size\" : 1032192\n"
        );
    }

    #[test]
    fn human_bytes_like_go_humanize() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(667648), "668 kB");
        assert_eq!(human_bytes(1032192), "1.0 MB");
        assert_eq!(human_bytes(12_600_000), "13 MB");
    }
}
