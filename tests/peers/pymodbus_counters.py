#!/usr/bin/env python3
"""Scripted Modbus people counters served by pymodbus, for hallgate's interoperability tests.

An independent Modbus implementation for the gateway to read: several counters, one per unit
id, served over Modbus TCP or Modbus RTU on a serial line, each with the register layout a
real counter model has. Their cumulative IN/OUT totals follow a scripted plan, so the test
knows exactly how many crossings the gateway must count.

    pymodbus_counters.py --plan PLAN.json --tcp 127.0.0.1:0
    pymodbus_counters.py --plan PLAN.json --serial /path/to/tty --baud 19200

The plan (JSON):

    {"counters": [{"unit": 1, "function_code": 3, "in_address": 0, "out_address": 2,
                   "value_type": "u32", "word_order": "high_first",
                   "in": 1245168, "out": 1245152}],
     "steps": [{"at_s": 0.5, "unit": 1, "in": 1245198},
               {"at_s": 1.5, "unit": 1, "out": 1245160}]}

- `function_code` 3 serves the totals as holding registers, 4 as input registers.
- `in_address`/`out_address` are 0-based protocol addresses (what goes on the wire).
- `value_type` is "u16" (one register) or "u32" (two registers, `word_order` "high_first" or
  "low_first": which word sits at the lower address).
- `in`/`out` are the totals served from the start; each step sets new totals (either or both)
  `at_s` seconds after the plan starts. A counter's IN and OUT registers change in one write,
  so no read ever sees half a step.

Talking to the test, one line each, on stdout:
- `ready` once the server listens (TCP: `ready port=N`, N being the port the server bound; pass
  port 0 to have the kernel choose a free one, so no other process can be answering there);
- `step K applied: unit=U in=I out=O` as each step is applied;
- `done` after the last step.

The plan starts when the line `go` arrives on stdin, not before: until then the totals stay at
their initial values, so whatever the gateway reads first (its baseline) is known. The server
exits when stdin closes, so it never outlives the test that started it.

Written for pymodbus 3.x (checked with 3.16) and Python 3.11.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from dataclasses import dataclass

try:
    import pymodbus
    from pymodbus import FramerType
    from pymodbus.datastore import (
        ModbusDeviceContext,
        ModbusSequentialDataBlock,
        ModbusServerContext,
    )
    from pymodbus.server import ModbusSerialServer, ModbusTcpServer
except ImportError as error:  # pragma: no cover - reported to the test as an exit status
    print(
        f"pymodbus_counters: cannot import pymodbus 3.x ({error}); "
        "install it with: python3 -m pip install 'pymodbus[serial]==3.*' "
        "(bash scripts/test.sh does)",
        file=sys.stderr,
    )
    sys.exit(3)

TABLES = {3: "holding", 4: "input"}
MODULUS = {"u16": 1 << 16, "u32": 1 << 32}
WIDTH = {"u16": 1, "u32": 2}


class PlanError(Exception):
    """The plan file says something this server cannot serve."""


@dataclass
class Counter:
    unit: int
    function_code: int
    in_address: int
    out_address: int
    value_type: str
    word_order: str
    totals: dict[str, int]

    def registers(self, which: str) -> list[int]:
        """The registers holding the `which` ("in" or "out") total, lowest address first."""
        value = self.totals[which]
        if self.value_type == "u16":
            return [value]
        high, low = value >> 16, value & 0xFFFF
        return [high, low] if self.word_order == "high_first" else [low, high]

    def span(self) -> tuple[int, int]:
        """First address and register count covering both totals."""
        width = WIDTH[self.value_type]
        start = min(self.in_address, self.out_address)
        end = max(self.in_address, self.out_address) + width
        return start, end - start

    def image(self) -> list[int]:
        """The registers of `span()`, with the current totals in place (gaps stay zero)."""
        start, count = self.span()
        regs = [0] * count
        for which, address in (("in", self.in_address), ("out", self.out_address)):
            for i, word in enumerate(self.registers(which)):
                regs[address - start + i] = word
        return regs


@dataclass
class Step:
    at_s: float
    unit: int
    totals: dict[str, int]


def load_plan(path: str) -> tuple[dict[int, Counter], list[Step]]:
    with open(path, encoding="utf-8") as file:
        plan = json.load(file)
    counters: dict[int, Counter] = {}
    for i, c in enumerate(plan.get("counters", [])):
        where = f"counters[{i}]"
        try:
            counter = Counter(
                unit=int(c["unit"]),
                function_code=int(c["function_code"]),
                in_address=int(c["in_address"]),
                out_address=int(c["out_address"]),
                value_type=str(c["value_type"]),
                word_order=str(c.get("word_order", "high_first")),
                totals={"in": int(c["in"]), "out": int(c["out"])},
            )
        except KeyError as error:
            raise PlanError(f"{where} has no {error}") from None
        if not 1 <= counter.unit <= 247:
            raise PlanError(f"{where}.unit must be 1 to 247, not {counter.unit}")
        if counter.unit in counters:
            raise PlanError(f"{where}.unit {counter.unit} is already another counter's")
        if counter.function_code not in TABLES:
            raise PlanError(f"{where}.function_code must be 3 or 4, not {counter.function_code}")
        if counter.value_type not in MODULUS:
            raise PlanError(f"{where}.value_type must be u16 or u32, not {counter.value_type}")
        if counter.word_order not in ("high_first", "low_first"):
            raise PlanError(f"{where}.word_order must be high_first or low_first")
        width = WIDTH[counter.value_type]
        if abs(counter.in_address - counter.out_address) < width:
            raise PlanError(f"{where}: the IN and OUT registers overlap")
        if min(counter.in_address, counter.out_address) < 0:
            raise PlanError(f"{where}: addresses are 0-based protocol addresses, not negative")
        check_totals(counter, counter.totals, where)
        counters[counter.unit] = counter
    if not counters:
        raise PlanError("the plan has no counters")
    steps: list[Step] = []
    for i, s in enumerate(plan.get("steps", [])):
        where = f"steps[{i}]"
        try:
            step = Step(
                at_s=float(s["at_s"]),
                unit=int(s["unit"]),
                totals={k: int(s[k]) for k in ("in", "out") if k in s},
            )
        except KeyError as error:
            raise PlanError(f"{where} has no {error}") from None
        if step.unit not in counters:
            raise PlanError(f"{where}.unit {step.unit} is not one of the plan's counters")
        if steps and step.at_s < steps[-1].at_s:
            raise PlanError(f"{where}.at_s goes back in time")
        check_totals(counters[step.unit], step.totals, where)
        steps.append(step)
    return counters, steps


def check_totals(counter: Counter, totals: dict[str, int], where: str) -> None:
    for which, value in totals.items():
        if not 0 <= value < MODULUS[counter.value_type]:
            raise PlanError(f"{where}.{which} = {value} does not fit in {counter.value_type}")


def build_context(counters: dict[int, Counter]) -> ModbusServerContext:
    devices = {}
    for unit, counter in counters.items():
        start, count = counter.span()
        tables = {3: [0] * (start + count), 4: [0] * (start + count)}
        tables[counter.function_code][start:] = counter.image()
        # pymodbus 3.16: a block at address 1 serves protocol address 0 (0 is refused).
        devices[unit] = ModbusDeviceContext(
            hr=ModbusSequentialDataBlock(1, tables[3]),
            ir=ModbusSequentialDataBlock(1, tables[4]),
        )
    return ModbusServerContext(devices=devices, single=False)


def say(line: str) -> None:
    print(line, flush=True)


async def play(server, counters: dict[int, Counter], steps: list[Step]) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    for k, step in enumerate(steps):
        await asyncio.sleep(max(0.0, started + step.at_s - loop.time()))
        counter = counters[step.unit]
        counter.totals.update(step.totals)
        start, _ = counter.span()
        # One write of the whole span: no read can see half a step (one word of a u32, or a
        # new IN beside an old OUT).
        await server.async_setValues(
            counter.unit, counter.function_code, start, counter.image()
        )
        say(
            f"step {k} applied: unit={counter.unit} "
            f"in={counter.totals['in']} out={counter.totals['out']}"
        )
    say("done")


async def serve(args: argparse.Namespace) -> int:
    counters, steps = load_plan(args.plan)
    context = build_context(counters)
    if args.tcp:
        host, _, port = args.tcp.rpartition(":")
        server = ModbusTcpServer(context, address=(host, int(port)))
    else:
        server = ModbusSerialServer(
            context, framer=FramerType.RTU, port=args.serial, baudrate=args.baud
        )
    # In the background: returns once listening (or raises if it cannot listen).
    await server.serve_forever(background=True)
    if args.tcp:
        bound = server.transport.sockets[0].getsockname()[1]
        say(f"ready port={bound}")
    else:
        say("ready")

    # stdin is read on a thread: asyncio cannot watch every kind of file (/dev/null, a file).
    loop = asyncio.get_running_loop()
    player = None
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        command = line.strip()
        if command == "go" and player is None:
            player = asyncio.create_task(play(server, counters, steps))
        elif command:
            print(f"pymodbus_counters: ignoring command {command!r}", file=sys.stderr)
    # stdin closed: the test is gone or finished.
    if player is not None:
        player.cancel()
    await server.shutdown()
    return 0


class NotDeprecations(logging.Filter):
    """pymodbus 3.16 warns at every datastore built with the 3.x API (and then that it is
    repeating itself); the 3.x API is the point."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "deprecated" not in message and not message.startswith("Repeating")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plan", required=True, help="JSON plan file")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--tcp", metavar="HOST:PORT", help="serve Modbus TCP (port 0: any free)")
    where.add_argument("--serial", metavar="TTY", help="serve Modbus RTU on this serial device")
    parser.add_argument("--baud", type=int, default=19200)
    parser.add_argument("--debug", action="store_true", help="log every frame")
    args = parser.parse_args()

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("pymodbus %(levelname)s %(message)s"))
    handler.addFilter(NotDeprecations())
    log = logging.getLogger("pymodbus")
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if args.debug else logging.WARNING)
    log.propagate = False
    print(
        f"pymodbus_counters: pymodbus {pymodbus.__version__}, python {sys.version.split()[0]}",
        file=sys.stderr,
        flush=True,
    )
    try:
        return asyncio.run(serve(args))
    except PlanError as error:
        print(f"pymodbus_counters: bad plan {args.plan}: {error}", file=sys.stderr)
        return 2
    except (RuntimeError, OSError) as error:
        print(f"pymodbus_counters: cannot serve: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
