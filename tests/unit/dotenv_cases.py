"""Tricky env files, shared by the reader's tests and its comparison with the real Compose.

Each case is an env file (bytes, as on disk), the process environment Compose runs with, and
what it means: `values` are what a service with `env_file:` gets (None: the file is refused).
The values were read off `docker compose config` (2.26.1, compose-go 2.4.8) and
test_dotenv_compose.py checks them against whatever Compose is installed.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Case:
    id: str
    text: bytes
    values: dict[str, str] | None  # None: Compose refuses the file
    environ: dict[str, str] = field(default_factory=dict)
    refusal_line: int | None = None  # the line the reader's refusal names
    # Keys whose ${KEY} in a compose file differs from `values` (the project environment).
    project: dict[str, str | None] = field(default_factory=dict)
    # Refused by Compose 2.26 and 2.40, taken by newer ones (compose-go 2.10.1 and later); the
    # reader keeps refusing it, so that the file works with every Compose.
    newer_compose_takes: bool = False


CASES = [
    Case("plain", b"A=hello\nB=two words\n", {"A": "hello", "B": "two words"}),
    Case("empty-values", b"A=\nB=\"\"\nC=''\nD=   \n", {"A": "", "B": "", "C": "", "D": ""}),
    Case("trailing-spaces-trimmed", b"A=value   \nB=value\t\n", {"A": "value", "B": "value"}),
    Case("leading-spaces-dropped", b"A=   value\n", {"A": "value"}),
    Case("spaces-kept-in-quotes", b"A=\"  x  \"\nB='  y  '\n", {"A": "  x  ", "B": "  y  "}),
    Case("spaces-around-equals", b"A = 1\nB  =  \"x\"\n", {"A": "1", "B": "x"}),
    Case("inline-comment", b"A=abc # a comment\nB=abc#not-a-comment\nC=abc\t#tab-then-hash\n",
         {"A": "abc", "B": "abc#not-a-comment", "C": "abc\t#tab-then-hash"}),
    Case("value-starting-with-hash", b"A=#abc\nB= # abc\n", {"A": "#abc", "B": "# abc"}),
    Case("comment-after-quotes", b"A=\"abc\" # note\nB='abc'# note\nC='x # y'\n",
         {"A": "abc", "B": "abc", "C": "x # y"}),
    Case("comments-and-blank-lines", b"# comment\n   # indented\n\n\t\nA=1\n#B=2\n", {"A": "1"}),
    Case("escaped-double-quote", b'A="say \\"hi\\""\n', {"A": 'say "hi"'}),
    Case("escaped-single-quote", b"A='it\\'s'\n", {"A": "it's"}),
    Case("other-quote-inside", b"A=\"it's\"\nB='say \"hi\"'\n", {"A": "it's", "B": 'say "hi"'}),
    Case("quotes-inside-bare-value", b"A=it's\nB=say \"hi\"\n", {"A": "it's", "B": 'say "hi"'}),
    Case("backslash-n-double-single-bare", b"A=\"a\\nb\"\nB='a\\nb'\nC=a\\nb\n",
         {"A": "a\nb", "B": "a\\nb", "C": "a\\nb"}),
    Case("double-quote-escapes", b'A="1\\t2\\r3\\a4\\b5\\f6\\v7\\\\8\\$9"\n',
         {"A": "1\t2\r3\a4\b5\f6\v7\\8$9"}),
    Case("octal-escapes", b'A="\\0101|\\012|\\0377|\\0400|\\089|\\0"\n', {"A": "A|\\12|\xff|\\400|\\89|\\"}),
    Case("unknown-escapes-stay", b'A="\\x41\\u00e9\\q"\n', {"A": "\\x41\\u00e9\\q"}),
    Case("backslash-before-closing-quote", b"A=\"a\\\\\"\nB='a\\\\'\n", {"A": "a\\", "B": "a\\\\"}),
    Case("broker-url-interpolation",
         b"REDIS_PASSWORD=s3cret\nCELERY_BROKER_URL=redis://:${REDIS_PASSWORD}@redis:6379/1\n",
         {"REDIS_PASSWORD": "s3cret", "CELERY_BROKER_URL": "redis://:s3cret@redis:6379/1"}),
    Case("unbraced-variables", b"A=x\nB=$A-y\nC=$Ay\nD=\"$A/$A\"\n", {"A": "x", "B": "x-y", "C": "", "D": "x/x"}),
    Case("dollar-dollar", b"A=pa$$word\nB=\"pa$$word\"\nC='pa$$word'\nD=\"\\$HOME\"\n",
         {"A": "pa$word", "B": "pa$word", "C": "pa$$word", "D": "$HOME"}),
    Case("lone-dollars", b"A=$\nB=$1\nC=a$\nD=$-x\nE=100$ off\n",
         {"A": "$", "B": "$1", "C": "a$", "D": "$-x", "E": "100$ off"}),
    Case("single-quotes-are-literal", b"A=1\nB='${A} $A'\n", {"A": "1", "B": "${A} $A"}),
    Case("defaults", b"E=\nA=${UNSET:-d}\nB=${UNSET-d}\nC=${E:-d}\nD=${E-d}\n",
         {"E": "", "A": "d", "B": "d", "C": "d", "D": ""}),
    Case("alternatives", b"S=1\nE=\nA=${S:+alt}\nB=${S+alt}\nC=${E:+alt}\nD=${E+alt}\nF=${UNSET+alt}\n",
         {"S": "1", "E": "", "A": "alt", "B": "alt", "C": "", "D": "alt", "F": ""}),
    Case("required-present", b"S=1\nE=\nA=${S:?must}\nB=${E?must}\n", {"S": "1", "E": "", "A": "1", "B": ""}),
    Case("required-missing", b"A=1\nB=${UNSET:?must be set}\n", None, refusal_line=2),
    Case("required-empty", b"E=\nA=${E:?must not be empty}\n", None, refusal_line=2),
    Case("nested-defaults", b"A=${U1:-${U2:-deep}}\nB=${U1:-${U2:-x}y}z}\n", {"A": "deep", "B": "xyz}"}),
    Case("default-then-more", b"A=${U:-x}-${U:-y}/$${U}\n", {"A": "x-y/${U}"}),
    Case("brace-count-quirk", b"A=${U:-{}}\n", {"A": "{}"}),
    Case("eager-default-refused", b"S=1\nA=${S:-${UNSET:?boom}}\n", None, refusal_line=2,
         newer_compose_takes=True),
    Case("invalid-empty-braces", b"A=ok\nB=${}\n", None, refusal_line=2),
    Case("invalid-digit-name", b"A=${1}\n", None, refusal_line=1),
    Case("invalid-operator", b"A=${B:x}\n", None, refusal_line=1),
    Case("invalid-unclosed", b"A=x${B\n", None, refusal_line=1),
    Case("name-case-folding", "A=${\u017f:-s}${\u212a-k}\n".encode(), {"A": "sk"}),
    Case("process-environment-wins", b"X=file\nY=${X}\n", {"X": "file", "Y": "env"}, environ={"X": "env"},
         project={"X": "env", "Y": "env"}),
    Case("process-environment-reference", b"A=${FROM_SHELL}/x\n", {"A": "/root/x"},
         environ={"FROM_SHELL": "/root"}),
    Case("earlier-key", b"A=1\nB=${A}\n", {"A": "1", "B": "1"}),
    Case("forward-reference", b"B=${A}\nA=1\n", {"B": "1", "A": "1"}, project={"B": ""}),
    Case("duplicate-last-wins", b"A=1\nA=2\n", {"A": "2"}),
    Case("redefined-after-use", b"A=1\nB=${A}\nA=2\n", {"A": "2", "B": "2"}, project={"B": "1"}),
    Case("self-default", b"A=${A:-self}\n", {"A": "self"}),
    Case("export", b"export A=1\nexport\tB=2\nexport=3\nexportC=4\nexport\nD=5\n",
         {"A": "1", "B": "2", "export": "3", "exportC": "4", "D": "5"}),
    Case("yaml-style", b"A: 1\nB:2\nC:\"x: y\"\n", {"A": "1", "B": "2", "C": "x: y"}),
    Case("bare-names", b"X\nY\n", {"X": "from-env"}, environ={"X": "from-env"}),
    Case("bare-name-keeps-earlier", b"A=1\nA\n", {"A": "1"}),
    Case("crlf", b"A=1\r\nB=\"2\"\r\nC=3 # c\r\n\r\n# x\r\nD='4'\r\n", {"A": "1", "B": "2", "C": "3", "D": "4"}),
    Case("carriage-returns-only", b"A=1\rB=2\r", {"A": "1\rB=2"}),
    Case("byte-order-mark", b"\xef\xbb\xbfA=1\n", {"A": "1"}),
    Case("no-final-newline", b"A=1\nB=2", {"A": "1", "B": "2"}),
    Case("empty-file", b"", {}),
    Case("blank-file", b"\n \n\t\n", {}),
    Case("multi-line-quoted", b"A=\"line1\nline2\"\nB='x\ny'\nC=after\n", {"A": "line1\nline2", "B": "x\ny", "C": "after"}),
    Case("text-after-closing-quote", b"A=\"x\"B=2\nC=\"y\" stray\n", {"A": "x", "B": "2", "C": "y"}),
    Case("quoted-then-more", b"A='x'y\n", {"A": "x"}),
    Case("unterminated-double", b"A=1\nB=\"never closed\nC=3\n", None, refusal_line=2),
    Case("unterminated-single", b"A='never closed\n", None, refusal_line=1),
    Case("name-characters", b"A.B=1\nC-D=2\nE[0]=3\n_F=4\n1G=5\n", {"A.B": "1", "C-D": "2", "E[0]": "3", "_F": "4", "1G": "5"}),
    Case("space-in-name", b"A=1\nMY KEY=1\n", None, refusal_line=2),
    Case("bad-character-in-name", b"A=1\n\nA!=1\n", None, refusal_line=3),
    Case("two-quoted-values", b"A='a' 'b'\n", None, refusal_line=1),
    Case("equals-without-name", b"A=1\n=foo\n", None, refusal_line=2),
    Case("last-line-without-equals", b"A=1\nFOO", None, refusal_line=2),
    Case("nul-in-value", b"A=1\nB=a\x00b\n", None, refusal_line=2),
    Case("nul-by-octal-escape", b"A=\"a\\0000b\"\n", None, refusal_line=1),
    Case("unicode-values", "A=h\u00e9llo \u4e2d\u6587\nB=\"emoji \U0001f389\"\n".encode(),
         {"A": "h\u00e9llo \u4e2d\u6587", "B": "emoji \U0001f389"}),
    Case("unicode-spaces", "A=x\u00a0\nB=x\u3000\nC=\u3000x\n\u3000D=1\n".encode(),
         {"A": "x", "B": "x", "C": "\u3000x", "D": "1"}),
    Case("url-with-fragment", b"A=http://h:80/p?a=b&c=d#frag\nB=b=c\n", {"A": "http://h:80/p?a=b&c=d#frag", "B": "b=c"}),
    Case("long-value", b"A=" + b"x" * 100_000 + b"\n", {"A": "x" * 100_000}),
    Case("many-keys", b"".join(b"K%d=v%d\n" % (i, i) for i in range(2000)), {f"K{i}": f"v{i}" for i in range(2000)}),
]

# Files Compose takes but the reader refuses, each with its one-line reason (see reader.py).
STRICTER = [
    Case("tab-inside-name", b"A=1\nK\tEY=1\n", {"A": "1", "K\tEY": "1"}, refusal_line=2),
    Case("vertical-tab-after-export", b"export\vA=1\n", {"export\vA": "1"}, refusal_line=1),
    Case("non-ascii-name", "A=1\n\u00c4B=1\n".encode(), {"A": "1", "\u00c4B": "1"}, refusal_line=2),
    Case("cyrillic-letter-in-name", "DB_PASSW\u041eRD=x\n".encode(), {"DB_PASSW\u041eRD": "x"}, refusal_line=1),
    Case("invalid-utf8", b"A=1\nB=\xff\xfe\n", {"A": "1", "B": "\ufffd\ufffd"}, refusal_line=2),
    Case("nesting-deeper-than-64", b"A=" + b"${U:-" * 70 + b"x" + b"}" * 70 + b"\n", {"A": "x"}, refusal_line=1),
    # compose-go before 2.8 takes M from the first file for X, later versions from the line above.
    Case("env-files-versions-disagree", b"M=1g\n---\nM=2g\nX=${M}\n", {"M": "2g", "X": "2g"}, refusal_line=2,
         project={"M": "2g", "X": "1g"}),
]

# Several --env-file files (sizes/<size>.env, then .env), the last also the env_file:.
MULTI = [
    Case("second-file-overrides", b"M=1g\nN=x\n---\nM=2g\n", {"M": "2g"}, project={"M": "2g", "N": "x"}),
    Case("second-file-uses-first", b"M=1g\n---\nX=${M}\n", {"X": "1g"}, project={"M": "1g", "X": "1g"}),
    Case("second-file-refused", b"M=1g\n---\nX=${N:?}\n", None, refusal_line=1),
]


def files_of(case: Case) -> list[bytes]:
    return case.text.split(b"\n---\n")
