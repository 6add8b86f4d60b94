"""Strict reading of source CSV files: one row per line, as many values as the header.

pandas and DuckDB's CSV sniffer forgive what a source export never contains, and lose rows
without a word doing it: a stray quote pair swallows every line between into one value, a
short row is padded with nulls, a blank line is skipped, and the sniffer may take the last
line for the header. Here each of those fails, naming the file, line and column.
"""

from __future__ import annotations

import csv
import gzip
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import IO

import pandas as pd

from personalization_pipeline.errors import SourceFileError


class CsvParseError(SourceFileError):
    """A CSV file that does not parse strictly; the message says where and why."""

    def __init__(self, path: Path, line: int, problem: str, column: str | None = None) -> None:
        where = f"{path}, line {line}" + (f", column {column}" if column else "")
        super().__init__(f"{where}: {problem}")
        self.line = line


def _open(path: Path, binary: bool = False) -> IO:
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    if binary:
        return opener(path, "rb")
    return opener(path, "rt", encoding="utf-8-sig", newline="")


def _column(header: list[str] | None, index: int) -> str:
    """Column `index` (0-based) as the user sees it: its number and, when known, its name."""
    name = header[index] if header is not None and index < len(header) else None
    return f"{index + 1}" + (f" ({name})" if name else "")


def _records(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, values) of every row, the header first; raises CsvParseError."""
    header: list[str] | None = None
    line = 0  # the last physical line read
    blank = None  # the first blank line, harmless only when nothing follows it
    with _open(path) as handle:
        reader = csv.reader(handle, strict=True)
        try:
            for values in reader:
                start, line = line + 1, reader.line_num
                if not values:
                    blank = blank or start
                    continue
                if blank is not None:
                    raise CsvParseError(
                        path, blank, "the line is blank; remove it (rows and lines must agree)"
                    )
                if line > start:
                    spanning = next(i for i, v in enumerate(values) if "\n" in v or "\r" in v)
                    raise CsvParseError(
                        path,
                        start,
                        f"a quoted value spans lines {start}-{line}; source files never hold "
                        "multi-line values, so a stray or unclosed quote is swallowing the rows "
                        "after it: fix the quote",
                        _column(header, spanning),
                    )
                if header is None:
                    header = _checked_header(path, values)
                elif len(values) != len(header):
                    raise CsvParseError(
                        path,
                        start,
                        f"expected {len(header)} values as in the header, found {len(values)}",
                        _column(header, min(len(values), len(header))),
                    )
                yield start, values
        except csv.Error as error:
            raise CsvParseError(
                path, line + 1, f"{error} (a stray or unclosed quote?); fix the quoting"
            ) from None
        except UnicodeDecodeError:
            raise _not_utf8(path) from None
    if header is None:
        raise SourceFileError(f"{path} is empty: not even a header line; check the file's producer")


def _checked_header(path: Path, names: list[str]) -> list[str]:
    for index, name in enumerate(names):
        if not name.strip():
            raise CsvParseError(
                path, 1, "the header has an empty column name", _column(None, index)
            )
        if name in names[:index]:
            raise CsvParseError(path, 1, f"column {name} appears twice in the header")
    return names


def _not_utf8(path: Path) -> CsvParseError:
    """Where the first byte that is not UTF-8 is: line, and the column that holds it."""
    header = None
    with _open(path, binary=True) as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8").removeprefix("\ufeff")
            except UnicodeDecodeError as error:
                before = raw[: error.start].decode("utf-8").removeprefix("\ufeff")
                index = len(next(csv.reader([before]))) - 1 if before else 0
                return CsvParseError(
                    path,
                    number,
                    f"byte 0x{raw[error.start]:02x} is not UTF-8; save the file as UTF-8",
                    _column(header, index),
                )
            if number == 1:
                header = next(csv.reader([text]), None)
    return CsvParseError(path, 1, "the file is not UTF-8; save it as UTF-8")


def csv_header(path: str | Path) -> list[str]:
    """The header of a CSV file, checked; raises SourceFileError for an empty file."""
    records = _records(Path(path))
    try:
        return next(records)[1]
    finally:
        records.close()


def csv_pages(path: str | Path, page_size: int) -> Iterator[pd.DataFrame]:
    """Every row, `page_size` at a time, all values strings ('' where empty).

    Each page's `attrs["first_line"]` is the file line of its first row.
    """
    records = _records(Path(path))
    _, header = next(records)
    while page := list(islice(records, page_size)):
        frame = pd.DataFrame([values for _, values in page], columns=header, dtype=object)
        frame.attrs["first_line"] = page[0][0]
        yield frame
