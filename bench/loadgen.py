"""A lean open-loop HTTP/1.1 load generator for the service benchmark.

The benchmark shares two cores with the API, PostgreSQL and a worker, so the client must cost
little: a general-purpose async client spends about as much CPU per request as the endpoint it
measures. This one writes a prepared GET on a pool of keep-alive connections and reads the
status line, headers and ``Content-Length`` body, as ``wrk`` would. Latency counts from the
moment a request was due, not from when it was sent, so a slow server cannot hide behind
requests it delayed (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def _request(host: str, port: int, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _response_status(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


def summarise(latencies: list[float], errors: int, wall: float) -> dict[str, Any]:
    lat = sorted(latencies)
    return {
        "requests": len(lat),
        "errors": errors,
        "achieved_rps": round(len(lat) / wall, 1),
        "p50_ms": round(1000 * statistics.median(lat), 2),
        "p99_ms": round(1000 * lat[int(0.99 * (len(lat) - 1))], 2),
        "max_ms": round(1000 * lat[-1], 2),
    }


async def sequential(
    host: str, port: int, path: str, headers: dict[str, str], n: int
) -> dict[str, Any]:
    """One request at a time on one connection: service time without queueing."""
    reader, writer = await asyncio.open_connection(host, port)
    request = _request(host, port, path, headers)
    lat: list[float] = []
    errors = 0
    start = time.perf_counter()
    try:
        for _ in range(n):
            t = time.perf_counter()
            writer.write(request)
            if await _response_status(reader) != 200:
                errors += 1
            lat.append(time.perf_counter() - t)
    finally:
        writer.close()
    return summarise(lat, errors, time.perf_counter() - start)


async def open_loop(
    host: str,
    port: int,
    path: str,
    headers: dict[str, str],
    rate: float,
    seconds: float,
    connections: int = 64,
    timeout: float = 10,
) -> dict[str, Any]:
    """Request i is due at t0 + i/rate whatever happened before; any non-200 or timeout counts
    as an error and its latency is the time it was given up at."""
    request = _request(host, port, path, headers)
    pool: asyncio.Queue[Conn] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await asyncio.open_connection(host, port))
    lat: list[float] = []
    errors = 0
    t0 = time.perf_counter() + 0.2

    async def one(i: int) -> None:
        nonlocal errors
        due = t0 + i / rate
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        reader, writer = await pool.get()
        try:
            writer.write(request)
            if await asyncio.wait_for(_response_status(reader), timeout) != 200:
                errors += 1
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
            errors += 1
            writer.close()  # its state is unknown now: replace the connection
            reader, writer = await asyncio.open_connection(host, port)
        pool.put_nowait((reader, writer))
        lat.append(time.perf_counter() - due)

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(int(rate * seconds))))
    wall = time.perf_counter() - start
    while not pool.empty():
        pool.get_nowait()[1].close()
    return summarise(lat, errors, wall)
