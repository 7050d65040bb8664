//! CRC-32C (Castagnoli), the checksum etcd's `HashKV` uses; table driven, slicing by 8.

const POLY: u32 = 0x82f6_3b78; // reflected Castagnoli polynomial

const fn tables() -> [[u32; 256]; 8] {
    let mut t = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { (c >> 1) ^ POLY } else { c >> 1 };
            k += 1;
        }
        t[0][i] = c;
        i += 1;
    }
    let mut i = 0;
    while i < 256 {
        let mut j = 1;
        while j < 8 {
            let prev = t[j - 1][i];
            t[j][i] = (prev >> 8) ^ t[0][(prev & 0xff) as usize];
            j += 1;
        }
        i += 1;
    }
    t
}

static TABLES: [[u32; 256]; 8] = tables();

/// Continues the CRC-32C `crc` (0 to start) over `data`, like Go's `crc32.Update`.
pub fn append(crc: u32, data: &[u8]) -> u32 {
    let t = &TABLES;
    let mut c = !crc;
    let mut chunks = data.chunks_exact(8);
    for ch in &mut chunks {
        let lo = u32::from_le_bytes([ch[0], ch[1], ch[2], ch[3]]) ^ c;
        let hi = u32::from_le_bytes([ch[4], ch[5], ch[6], ch[7]]);
        c = t[7][(lo & 0xff) as usize]
            ^ t[6][((lo >> 8) & 0xff) as usize]
            ^ t[5][((lo >> 16) & 0xff) as usize]
            ^ t[4][(lo >> 24) as usize]
            ^ t[3][(hi & 0xff) as usize]
            ^ t[2][((hi >> 8) & 0xff) as usize]
            ^ t[1][((hi >> 16) & 0xff) as usize]
            ^ t[0][(hi >> 24) as usize];
    }
    for &b in chunks.remainder() {
        c = t[0][((c ^ b as u32) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

#[cfg(test)]
mod tests {
    use super::append;

    #[test]
    fn known_vectors() {
        assert_eq!(append(0, b""), 0);
        assert_eq!(append(0, b"123456789"), 0xe306_9283);
        assert_eq!(append(0, &[0u8; 32]), 0x8a91_36aa);
        assert_eq!(append(0, &[0xffu8; 32]), 0x62a8_ab43);
        // Incremental equals one shot, across chunk boundaries.
        let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let whole = append(0, &data);
        let mut c = 0;
        for part in data.chunks(7) {
            c = append(c, part);
        }
        assert_eq!(c, whole);
    }
}
