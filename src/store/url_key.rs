//! Keys in a listing asked for with `encoding-type=url`: S3 escapes every byte XML
//! 1.0 cannot carry (a key may hold any UTF-8, control characters too), and a space
//! as `+`, as form encoding does.

/// The key a url-encoded listing entry names; None when the bytes are no UTF-8.
pub fn decode(encoded: &str) -> Option<String> {
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                // Two hex digits exactly (from_str_radix alone would take `%+1`).
                let hex = bytes
                    .get(i + 1..i + 3)
                    .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                    .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
                match hex {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    // A lone `%` is taken as it is.
                    None => out.push(b'%'),
                }
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_plus_decode() {
        assert_eq!(decode("a%01b").as_deref(), Some("a\u{1}b"));
        assert_eq!(decode("my+file%2B1.txt").as_deref(), Some("my file+1.txt"));
        assert_eq!(decode("caf%C3%A9/").as_deref(), Some("café/"));
        assert_eq!(decode("plain/key").as_deref(), Some("plain/key"));
        assert_eq!(decode("100%").as_deref(), Some("100%"));
        assert_eq!(decode("%zz%4").as_deref(), Some("%zz%4"));
        assert_eq!(decode("%FF"), None, "not UTF-8");
        assert_eq!(decode("%+1%-1").as_deref(), Some("% 1%-1"), "no signs");
    }

    #[test]
    fn no_input_panics() {
        // Every short string over a small alphabet that stresses the escapes.
        let alphabet = ['%', '+', 'a', 'F', '0', 'é', '\u{1}'];
        let mut words = vec![String::new()];
        for _ in 0..4 {
            let longer: Vec<String> = words
                .iter()
                .flat_map(|w| alphabet.iter().map(move |c| format!("{w}{c}")))
                .collect();
            for word in &longer {
                let _ = decode(word);
            }
            words = longer;
        }
    }
}
