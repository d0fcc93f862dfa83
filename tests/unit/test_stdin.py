"""difyops.stdin.TextInput through a real invoke run: the text arrives whole, in one read."""

from __future__ import annotations

import io

from invoke import Context

from difyops.stdin import CHUNK, TextInput


def test_reads_come_in_chunks_whatever_size_is_asked():
    text = "x" * (CHUNK + 10)
    stream = TextInput(text)
    assert len(stream.read(1)) == CHUNK
    assert stream.read(1) == "x" * 10
    assert stream.read(1) == ""
    assert TextInput("abc").read() == "abc"


def counting(base):
    class Counting(base):
        reads = 0

        def read(self, size=-1):
            data = super().read(size)
            if data:
                type(self).reads += 1
            return data

    return Counting


def test_a_stack_file_sized_input_reaches_the_process_whole_in_one_read():
    text = "".join(f"line {i}\n" for i in range(2500))  # ~24 KB, the size of a stack file
    stream = counting(TextInput)(text)
    result = Context().run("wc -c", in_stream=stream, hide=True)
    assert int(result.stdout.split()[0]) == len(text.encode())
    assert stream.reads == 1
    # What it replaces: invoke reads a plain StringIO one character at a time (10 ms apart).
    sample = counting(io.StringIO)(text[:50])
    Context().run("wc -c", in_stream=sample, hide=True)
    assert sample.reads == 50
