//! Plain-text tables for people: left-aligned columns, two spaces apart.

/// Renders `rows` under `headers`; every row should have one cell per header (missing
/// cells are blank, extra ones are dropped). Widths count characters, not bytes.
pub fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (index, width) in widths.iter().enumerate() {
            let cell = cells.next().unwrap_or("");
            if index > 0 {
                text.push_str("  ");
            }
            text.push_str(cell);
            let pad = width.saturating_sub(cell.chars().count());
            text.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::render;

    #[test]
    fn columns_align() {
        let table = render(
            &["NODE", "SLOT"],
            &[
                vec!["node-1".into(), "12".into()],
                vec!["n2".into(), "3".into(), "extra".into()],
                vec!["é".into()],
            ],
        );
        assert_eq!(table, "NODE    SLOT\nnode-1  12\nn2      3\né\n");
    }
}
