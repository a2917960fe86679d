"""Low-level reader for wandb's ``.wandb`` transaction log.

The format (written by wandb-core, a LevelDB-journal variant):

* a 7-byte file header: ``b":W&B"``, the magic ``0xBEE1`` (uint16 little
  endian) and a version byte ``0``;
* then 32 KiB blocks (the file header counts towards the first block) holding
  chunks, each with a 7-byte chunk header: checksum (uint32 LE), payload length
  (uint16 LE), chunk type (FULL=1, FIRST=2, MIDDLE=3, LAST=4). A record larger
  than what is left of a block is split into FIRST/MIDDLE.../LAST chunks; when
  fewer than 7 bytes are left in a block the writer pads them with zeros.
* The checksum is a CRC-32 over the type byte followed by the payload, stored
  unmasked. wandb 0.31 uses the IEEE polynomial (zlib's crc32); CRC-32C
  (Castagnoli, LevelDB's choice) is accepted too, detected on the first chunk,
  so a file from a writer using it still reads.

Each reassembled record is a serialized ``wandb_internal_pb2.Record``.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, List, Optional

FILE_IDENT = b":W&B"
FILE_MAGIC = 0xBEE1
FILE_VERSION = 0
FILE_HEADER = struct.Struct("<4sHB")
CHUNK_HEADER = struct.Struct("<IHB")
HEADER_LEN = 7
BLOCK_LEN = 32 * 1024

FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


class NotAWandbFileError(ValueError):
    """The file is not a wandb transaction log (wrong or missing header)."""

    def __init__(self, path: Path | str, reason: str):
        self.path = Path(path)
        super().__init__(f"{path}: not a W&B transaction log ({reason})")


def crc32_ieee(data: bytes, crc: int = 0) -> int:
    return zlib.crc32(data, crc) & 0xFFFFFFFF


def _make_crc32c_table() -> List[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C_TABLE = _make_crc32c_table()


def crc32c(data: bytes, crc: int = 0) -> int:
    """CRC-32C (Castagnoli), table-driven; only used for files that need it."""
    table = _CRC32C_TABLE
    crc ^= 0xFFFFFFFF
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _chunk_checksum(algo: Callable[[bytes, int], int], ctype: int, payload: bytes) -> int:
    return algo(payload, algo(bytes([ctype]), 0))


@dataclass
class LogScan:
    """Result of scanning a log: whole records plus how the scan ended."""

    records: List[bytes] = field(default_factory=list)
    truncated: bool = False  # the file ends inside a record, or a chunk is corrupt
    problem: Optional[str] = None  # what stopped the scan early, for messages
    checksum: str = "crc32"


def check_header(data: bytes, path: Path | str) -> None:
    if len(data) < HEADER_LEN:
        raise NotAWandbFileError(path, f"only {len(data)} bytes, no file header")
    ident, magic, version = FILE_HEADER.unpack_from(data, 0)
    if ident != FILE_IDENT or magic != FILE_MAGIC:
        raise NotAWandbFileError(path, "bad file header")
    if version != FILE_VERSION:
        raise NotAWandbFileError(path, f"unsupported log version {version}")


def scan_log(data: bytes, path: Path | str = "<bytes>") -> LogScan:
    """Split a whole log into record payloads, stopping at the first bad chunk."""
    check_header(data, path)
    scan = LogScan()
    algo: Optional[Callable[[bytes, int], int]] = None
    pending: Optional[List[bytes]] = None  # chunks of a record being reassembled
    pos, end = HEADER_LEN, len(data)

    def stop(problem: str) -> LogScan:
        scan.truncated, scan.problem = True, f"{problem} at byte {pos}"
        return scan

    while pos < end:
        left_in_block = BLOCK_LEN - pos % BLOCK_LEN
        if left_in_block < HEADER_LEN:  # zero padding at a block's end
            pos += left_in_block
            continue
        if pos + HEADER_LEN > end:
            if any(data[pos:end]):
                return stop("partial chunk header")
            break
        checksum, length, ctype = CHUNK_HEADER.unpack_from(data, pos)
        if ctype == 0 and length == 0 and checksum == 0:
            # Zeros: pre-allocated or padded space. Nothing follows if the rest is zero.
            if not any(data[pos:end]):
                break
            pos += left_in_block
            continue
        if HEADER_LEN + length > left_in_block:
            return stop("chunk overruns its block")
        if pos + HEADER_LEN + length > end:
            return stop("partial chunk (file cut mid-record)")
        payload = data[pos + HEADER_LEN : pos + HEADER_LEN + length]
        if algo is None:  # detect the checksum flavour on the first chunk
            for name, candidate in (("crc32", crc32_ieee), ("crc32c", crc32c)):
                if _chunk_checksum(candidate, ctype, payload) == checksum:
                    algo, scan.checksum = candidate, name
                    break
            else:
                return stop("checksum mismatch")
        elif _chunk_checksum(algo, ctype, payload) != checksum:
            return stop("checksum mismatch")

        if ctype == FULL and pending is None:
            scan.records.append(payload)
        elif ctype == FIRST and pending is None:
            pending = [payload]
        elif ctype == MIDDLE and pending is not None:
            pending.append(payload)
        elif ctype == LAST and pending is not None:
            pending.append(payload)
            scan.records.append(b"".join(pending))
            pending = None
        else:
            return stop(f"unexpected chunk type {ctype}")
        pos += HEADER_LEN + length

    if pending is not None:
        scan.truncated, scan.problem = True, "file ends inside a multi-chunk record"
    return scan


def iter_log_records(path: Path | str) -> Iterator[bytes]:
    """Yield the record payloads of a log file (convenience wrapper)."""
    path = Path(path)
    yield from scan_log(path.read_bytes(), path).records
