//! Incremental UTF-8 validation across fragments, failing on the first invalid byte.

/// Carries an incomplete code point (at most 3 bytes) from one chunk to the next.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Utf8Validator {
    pending: [u8; 4],
    len: u8,
}

/// The invalid byte sequence was found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Invalid;

impl Utf8Validator {
    /// Validates the next chunk. Fails as soon as a sequence can no longer become valid
    /// UTF-8, even when more chunks would follow.
    pub(crate) fn feed(&mut self, mut data: &[u8]) -> Result<(), Invalid> {
        if self.len > 0 {
            data = self.complete_pending(data)?;
            if self.len > 0 {
                return Ok(());
            }
        }
        match std::str::from_utf8(data) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_some() => Err(Invalid),
            Err(e) => {
                let tail = &data[e.valid_up_to()..];
                self.pending[..tail.len()].copy_from_slice(tail);
                self.len = tail.len() as u8;
                Ok(())
            }
        }
    }

    /// The message ended: valid only if no code point is left incomplete.
    pub(crate) fn finish(&self) -> Result<(), Invalid> {
        if self.len == 0 {
            Ok(())
        } else {
            Err(Invalid)
        }
    }

    /// Moves bytes from `data` into the pending code point; returns the rest of `data`.
    fn complete_pending<'a>(&mut self, data: &'a [u8]) -> Result<&'a [u8], Invalid> {
        let have = usize::from(self.len);
        let need = char_width(self.pending[0]).saturating_sub(have);
        let take = need.min(data.len());
        self.pending[have..have + take].copy_from_slice(&data[..take]);
        let total = have + take;
        match std::str::from_utf8(&self.pending[..total]) {
            Ok(_) => self.len = 0,
            Err(e) if e.error_len().is_some() => return Err(Invalid),
            Err(_) => self.len = total as u8,
        }
        Ok(&data[take..])
    }
}

/// The length of the sequence a valid leading byte starts (from_utf8 vetted it already).
fn char_width(lead: u8) -> usize {
    match lead {
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_everywhere(bytes: &[u8]) -> Vec<bool> {
        (0..=bytes.len())
            .map(|cut| {
                let mut v = Utf8Validator::default();
                let (a, b) = bytes.split_at(cut);
                v.feed(a)
                    .and_then(|_| v.feed(b))
                    .and_then(|_| v.finish())
                    .is_ok()
            })
            .collect()
    }

    #[test]
    fn valid_text_split_anywhere_is_valid() {
        let text = "κόσμε 𝄞 ascii €".as_bytes();
        assert!(split_everywhere(text).iter().all(|ok| *ok));
        let mut v = Utf8Validator::default();
        for b in text {
            v.feed(std::slice::from_ref(b)).unwrap();
        }
        v.finish().unwrap();
    }

    #[test]
    fn invalid_text_split_anywhere_is_invalid() {
        for bad in [
            &b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited"[..],
            b"\xf4\x90\x80\x80",
            b"\xc0\xaf",
            b"ab\xff",
            b"\xe0\x80",
        ] {
            assert!(split_everywhere(bad).iter().all(|ok| !ok), "{bad:x?}");
        }
    }

    #[test]
    fn fails_fast_before_the_message_ends() {
        let mut v = Utf8Validator::default();
        v.feed("κόσμε".as_bytes()).unwrap();
        assert_eq!(v.feed(b"\xed\xa0\x80"), Err(Invalid));
        let mut v = Utf8Validator::default();
        v.feed(b"\xf0").unwrap();
        assert_eq!(v.feed(b"\x28"), Err(Invalid));
        let mut v = Utf8Validator::default();
        v.feed(b"\xe2\x82").unwrap();
        assert_eq!(v.finish(), Err(Invalid));
        v.feed(b"").unwrap();
        v.feed(b"\xac").unwrap();
        v.finish().unwrap();
    }
}
