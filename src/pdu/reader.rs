//! A bounds-checked cursor over the PDU octets: every read either succeeds or returns
//! [`PduError::Truncated`] with the field name and the absolute offset, so no decoder can read out of bounds.

use super::PduError;

#[derive(Clone)]
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, pos: 0 }
    }

    /// Offset of the next octet from the start of the PDU.
    pub(crate) fn offset(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.pos)
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, PduError> {
        let [octet] = self.array::<1>(field)?;
        Ok(octet)
    }

    pub(crate) fn array<const N: usize>(
        &mut self,
        field: &'static str,
    ) -> Result<[u8; N], PduError> {
        let slice = self.take(N, field)?;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        Ok(out)
    }

    pub(crate) fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], PduError> {
        let end = self.pos.checked_add(n);
        match end.and_then(|end| self.bytes.get(self.pos..end)) {
            Some(slice) => {
                self.pos += n;
                Ok(slice)
            }
            None => Err(PduError::Truncated {
                field,
                offset: self.pos,
                needed: n,
                available: self.remaining(),
            }),
        }
    }
}
