"""Text that is on every machine offline: the Python standard library's own sources.

glm4-tiny is trained on it and glmkit's big synthetic tokenizers are fitted to it. A fixed 1-in-25 slice of
files (by a hash of their path) is held out for evaluation.
"""

from __future__ import annotations

import sysconfig
import zlib
from collections.abc import Iterator
from pathlib import Path

SKIP_DIRS = {"test", "tests", "idlelib", "site-packages", "__pycache__", "lib2to3", "turtledemo", "ensurepip"}
HELD_OUT_MODULUS = 25


def stdlib_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = [p for p in root.rglob("*.py") if not SKIP_DIRS.intersection(p.relative_to(root).parts[:-1])]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def is_held_out(path: Path) -> bool:
    root = Path(sysconfig.get_paths()["stdlib"])
    return zlib.crc32(path.relative_to(root).as_posix().encode()) % HELD_OUT_MODULUS == 0


def stdlib_texts(held_out: bool = False, max_bytes: int | None = None) -> Iterator[str]:
    """Source files as text, in a fixed order; the training split by default, the held-out one on request."""
    total = 0
    for p in stdlib_files():
        if is_held_out(p) != held_out:
            continue
        try:
            text = p.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        total += len(text)
        yield text
        if max_bytes and total >= max_bytes:
            return


# Text that tokenizers get wrong first: scripts with multi-byte UTF-8, joiners, full-width forms, CRLF, digit
# runs, runs of spaces at both ends. Verification encodes it with the source's tokenizer and the artifact's.
TOKENIZER_PROBES: tuple[str, ...] = (
    "Привет, мир! Эти ограничения касаются всех пользователей. Съешь же ещё этих мягких французских булок.",
    "你好，世界。请查看以下说明：模型转换之后需要验证。我们查看了所有的数据。",
    "こんにちは世界。カタカナとひらがな、漢字を混ぜた日本語の文章です。東京都に住んでいます。",
    "안녕하세요 세계. 한국어 문장도 토큰화해야 합니다. 대한민국 서울특별시.",
    "مرحبا بالعالم. هذه جملة عربية للاختبار، مع أرقام ١٢٣٤٥.",
    "नमस्ते दुनिया। यह हिंदी का वाक्य है। भारत गणराज्य",
    "Emoji: 👩‍💻 👨‍👩‍👧‍👦 🏳️‍🌈 🤖🚀 ❤️ 👍🏽 1️⃣ 🇩🇪",
    "Ｆｕｌｌ－ｗｉｄｔｈ　ＡＢＣ　１２３！？ and ｶﾀｶﾅ half-width",
    "def fib(n: int) -> int:\r\n    return n if n < 2 else fib(n - 1) + fib(n - 2)  # 12345678901234567890\r\n",
    "\t\tindented   spaces    and\r\nwindows lines 3.14159 0x1F 1,000,000 0000000000000042",
    "   leading spaces, trailing spaces   ",
    "\n\n\nblank lines\n\n",
    "Grüße aus Köln — naïve café, Ærø, Øresund, ß ẞ.",
)
