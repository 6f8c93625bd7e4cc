//! Message storages (`SM`, `ME`, `SR`) as `AT+CPMS` selects them: fixed-size slot tables indexed from 1,
//! holding PDUs with their 27.005 `<stat>`.

/// 27.005 `<stat>` in PDU mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stat {
    RecUnread = 0,
    RecRead = 1,
    StoUnsent = 2,
    StoSent = 3,
}

impl Stat {
    pub fn code(self) -> u8 {
        self as u8
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stored {
    pub stat: Stat,
    /// The whole PDU, SMSC field included, as `+CMGR` prints it.
    pub pdu: Vec<u8>,
}

impl Stored {
    /// `<length>` for `+CMGR`/`+CMGL`: TPDU octets, SMSC field excluded.
    pub fn tpdu_len(&self) -> usize {
        tpdu_len(&self.pdu).unwrap_or(0)
    }
}

/// TPDU length of a PDU whose first octet is the SMSC field length, `None` when that field overruns it.
pub(crate) fn tpdu_len(pdu: &[u8]) -> Option<usize> {
    let smsc = usize::from(*pdu.first()?);
    pdu.len().checked_sub(1 + smsc)
}

/// A storage name the simulator knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mem {
    Sm,
    Me,
    Sr,
}

impl Mem {
    pub fn parse(name: &str) -> Option<Mem> {
        match name.to_ascii_uppercase().as_str() {
            "SM" => Some(Mem::Sm),
            // "MT" is SM+ME on real modems; the simulator keeps it simple and maps it to ME.
            "ME" | "MT" => Some(Mem::Me),
            "SR" => Some(Mem::Sr),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mem::Sm => "SM",
            Mem::Me => "ME",
            Mem::Sr => "SR",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Why a storage operation failed, as the `+CMS ERROR` code a modem gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoreError {
    /// 321: index out of range or empty slot.
    InvalidIndex,
    /// 322: no free slot.
    Full,
}

impl StoreError {
    pub fn cms(self) -> u16 {
        match self {
            StoreError::InvalidIndex => 321,
            StoreError::Full => 322,
        }
    }
}

/// All storages of one modem. They live on "the SIM": a reboot (port vanishing) keeps them.
#[derive(Debug, Clone)]
pub(crate) struct Storage {
    mems: [Vec<Option<Stored>>; 3],
}

impl Storage {
    pub fn new(capacity: usize) -> Self {
        Storage {
            mems: std::array::from_fn(|_| vec![None; capacity]),
        }
    }

    pub fn used(&self, mem: Mem) -> usize {
        self.slots(mem).iter().filter(|s| s.is_some()).count()
    }

    pub fn capacity(&self, mem: Mem) -> usize {
        self.slots(mem).len()
    }

    /// Store in the first free slot and return its 1-based index.
    pub fn store(&mut self, mem: Mem, stored: Stored) -> Result<usize, StoreError> {
        let slots = self.slots_mut(mem);
        let free = slots
            .iter()
            .position(Option::is_none)
            .ok_or(StoreError::Full)?;
        if let Some(slot) = slots.get_mut(free) {
            *slot = Some(stored);
        }
        Ok(free + 1)
    }

    /// Read a message, marking a received one as read (as `AT+CMGR` does).
    pub fn read(&mut self, mem: Mem, index: usize) -> Result<Stored, StoreError> {
        let stored = self
            .slot_mut(mem, index)?
            .as_mut()
            .ok_or(StoreError::InvalidIndex)?;
        let before = stored.clone();
        if stored.stat == Stat::RecUnread {
            stored.stat = Stat::RecRead;
        }
        Ok(before)
    }

    /// `(index, message)` for every message matching `filter` (`None` = all), marking them read.
    pub fn list(&mut self, mem: Mem, filter: Option<Stat>) -> Vec<(usize, Stored)> {
        let mut out = Vec::new();
        for (i, slot) in self.slots_mut(mem).iter_mut().enumerate() {
            if let Some(stored) = slot.as_mut().filter(|s| filter.is_none_or(|f| s.stat == f)) {
                out.push((i + 1, stored.clone()));
                if stored.stat == Stat::RecUnread {
                    stored.stat = Stat::RecRead;
                }
            }
        }
        out
    }

    /// Delete one index; deleting an empty slot is fine (as on most modems), out of range is not.
    pub fn delete(&mut self, mem: Mem, index: usize) -> Result<(), StoreError> {
        *self.slot_mut(mem, index)? = None;
        Ok(())
    }

    /// `AT+CMGD=<i>,<flag>` with flag 1..=4: delete every message whose stat the flag covers.
    pub fn delete_by_flag(&mut self, mem: Mem, flag: u32) {
        let doomed: &[Stat] = match flag {
            1 => &[Stat::RecRead],
            2 => &[Stat::RecRead, Stat::StoSent],
            3 => &[Stat::RecRead, Stat::StoSent, Stat::StoUnsent],
            _ => &[
                Stat::RecRead,
                Stat::StoSent,
                Stat::StoUnsent,
                Stat::RecUnread,
            ],
        };
        for slot in self.slots_mut(mem) {
            if slot.as_ref().is_some_and(|s| doomed.contains(&s.stat)) {
                *slot = None;
            }
        }
    }

    fn slots(&self, mem: Mem) -> &[Option<Stored>] {
        self.mems.get(mem.index()).map_or(&[], Vec::as_slice)
    }

    fn slots_mut(&mut self, mem: Mem) -> &mut [Option<Stored>] {
        self.mems
            .get_mut(mem.index())
            .map_or(&mut [], Vec::as_mut_slice)
    }

    fn slot_mut(&mut self, mem: Mem, index: usize) -> Result<&mut Option<Stored>, StoreError> {
        index
            .checked_sub(1)
            .and_then(|i| self.slots_mut(mem).get_mut(i))
            .ok_or(StoreError::InvalidIndex)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(stat: Stat) -> Stored {
        Stored {
            stat,
            pdu: vec![0, 1, 2, 3],
        }
    }

    #[test]
    fn store_read_list_delete() {
        let mut s = Storage::new(2);
        assert_eq!(s.store(Mem::Sm, msg(Stat::RecUnread)), Ok(1));
        assert_eq!(s.store(Mem::Sm, msg(Stat::RecUnread)), Ok(2));
        assert_eq!(
            s.store(Mem::Sm, msg(Stat::RecUnread)),
            Err(StoreError::Full)
        );
        assert_eq!(s.used(Mem::Me), 0);
        assert_eq!(s.read(Mem::Sm, 1).unwrap().stat, Stat::RecUnread);
        assert_eq!(s.read(Mem::Sm, 1).unwrap().stat, Stat::RecRead);
        assert_eq!(s.read(Mem::Sm, 0), Err(StoreError::InvalidIndex));
        assert_eq!(s.read(Mem::Sm, 3), Err(StoreError::InvalidIndex));
        let unread = s.list(Mem::Sm, Some(Stat::RecUnread));
        assert_eq!(unread.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![2]);
        assert!(s.list(Mem::Sm, Some(Stat::RecUnread)).is_empty());
        s.delete(Mem::Sm, 1).unwrap();
        assert_eq!(s.used(Mem::Sm), 1);
        assert_eq!(s.delete(Mem::Sm, 9), Err(StoreError::InvalidIndex));
        s.delete_by_flag(Mem::Sm, 4);
        assert_eq!(s.used(Mem::Sm), 0);
        assert_eq!(msg(Stat::RecRead).tpdu_len(), 3);
        assert_eq!(tpdu_len(&[7, 1]), None);
    }
}
