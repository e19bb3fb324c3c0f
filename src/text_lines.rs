//! Text files of lines that become model inputs: the pairs of `finetune` (`--pairs`, `--val`),
//! label vocabularies and prompt templates. Each line is a caption, a label or a template,
//! and a text model reads only its first tokens (77 for CLIP), so a line longer than
//! [`MAX_LINE_BYTES`] is refused with its line number before it is held or tokenised: a
//! single 10 MB line would otherwise cost the tokenizer close to a gigabyte.

use std::io::{BufRead, Read};
use std::path::Path;

use crate::error::{Error, Result};

/// The longest line such a file may have, in bytes (an image path and its caption).
pub const MAX_LINE_BYTES: usize = 16 * 1024;

/// Reads the text of a file of lines (`what` names it in messages: "the pairs file"),
/// refusing a line over [`MAX_LINE_BYTES`] or not UTF-8 without reading the rest of it.
/// Lines end in `\n` or `\r\n`; the text returned ends each with `\n`.
pub fn read_text_lines(path: &Path, what: &str) -> Result<String> {
    let cannot = |e: std::io::Error| Error::Invalid(format!("cannot read {what} {}: {e}", path.display()));
    let mut reader = std::io::BufReader::new(std::fs::File::open(path).map_err(cannot)?);
    let mut text = String::new();
    let mut line = Vec::new();
    for number in 1.. {
        line.clear();
        // At most two bytes past the limit: a line end, or proof that the line is too long.
        let read = (&mut reader).take(MAX_LINE_BYTES as u64 + 2).read_until(b'\n', &mut line).map_err(cannot)?;
        if read == 0 {
            break;
        }
        let body = line.strip_suffix(b"\n").map_or(&line[..], |l| l.strip_suffix(b"\r").unwrap_or(l));
        if body.len() > MAX_LINE_BYTES {
            return Err(Error::Invalid(format!(
                "{}:{number}: the line is longer than {MAX_LINE_BYTES} bytes; a text model reads only the first \
                 words of a text: shorten it",
                path.display()
            )));
        }
        let body = std::str::from_utf8(body)
            .map_err(|_| Error::Invalid(format!("{}:{number}: the line is not UTF-8 text", path.display())))?;
        text.push_str(body);
        text.push('\n');
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_refused_with_their_number() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("lines.txt");
        let limit = "x".repeat(MAX_LINE_BYTES);
        std::fs::write(&file, format!("a\r\n{limit}\r\nb")).unwrap();
        assert_eq!(read_text_lines(&file, "the file").unwrap(), format!("a\n{limit}\nb\n"));
        std::fs::write(&file, format!("a\n{limit}x\nb\n")).unwrap();
        let e = read_text_lines(&file, "the file").unwrap_err().to_string();
        assert!(e.contains("lines.txt:2") && e.contains("longer than"), "{e}");
        std::fs::write(&file, b"a\n\xff\n").unwrap();
        assert!(read_text_lines(&file, "the file").unwrap_err().to_string().contains(":2: the line is not UTF-8"));
    }
}
