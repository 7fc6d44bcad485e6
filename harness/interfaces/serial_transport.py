"""How bytes reach a console and come back from it: one port class per kind of pyserial URL.

`open_port` opens any URL `serial.serial_for_url` understands and returns a `Port` that reads
what is there in blocks and writes by a deadline, whatever carries the bytes:

- a local tty (a device, a pty): the file descriptor pyserial opened, read with poll + read;
- ``socket://host:port`` (ser2net raw mode): the TCP socket, read with poll + recv. pyserial's
  own `read` says only "0 or 1 bytes waiting" there, so a transcript got one record per byte;
- ``rfc2217://host:port`` (ser2net ``telnet(rfc2217)``, labgrid exporters): pyserial's RFC 2217
  client does the negotiation; `_Rfc2217Serial` replaces its reader, which queued and parsed
  every byte on its own, with one that hands over runs of data between telnet commands;
- anything else (``loop://``, ``spy://``): pyserial's own read and write.

No port discards what arrived before it was opened (pyserial's open flushes a tty, drains a
socket and has an RFC 2217 server purge its buffers): a console that prints its boot log as
the connection opens keeps it. Settings a transport cannot take are not sent, and the port's
`notes` say so for the transcript: a raw TCP port carries bytes only (the console server sets
the line), and an RFC 2217 client does not ask for DTR/RTS at open (the server raised them when
it opened the device; a pty behind ser2net cannot take them and ser2net leaves the request
unanswered). Every write ends by its deadline or raises `PortTimeout`, also where pyserial has
no write timeout (RFC 2217).
"""

from __future__ import annotations

import math
import os
import select
import socket
import threading
import time
from typing import Any, Mapping

import serial
import serial.rfc2217 as rfc2217
from serial.urlhandler import protocol_socket

from harness.formats.telnet import Negotiation, Subnegotiation, TelnetDecoder, TelnetError

READ_SIZE = 1 << 16  # bytes asked of the OS per read
RX_BUFFER_MAX = 16 << 20  # RFC 2217 bytes held unread before the reader stops taking more (TCP backpressure)


class PortFailed(serial.SerialException):
    """The port failed: the tty hung up, the connection closed or broke, the server misbehaved."""


class PortTimeout(PortFailed):
    """A write could not finish by its deadline (the other end is not reading)."""


def write_by(fd: int, data: bytes, deadline: float) -> None:
    """Write all of `data` to the non-blocking `fd` (a tty or a socket) by `deadline` (monotonic)."""
    view = memoryview(data)
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    while view:
        left = deadline - time.monotonic()
        if left <= 0:
            raise PortTimeout(f"wrote {len(data) - len(view)} of {len(data)} bytes by the deadline")
        if not poller.poll(max(1, math.ceil(left * 1000))):
            continue
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            continue
        view = view[n:]


class Port:
    """A console port: `read(timeout)` what is there, `write(data, deadline)`, `close()`."""

    kind = "pyserial"

    def __init__(self, ser: Any) -> None:
        self.serial = ser
        self.notes: list[str] = []  # settings not taken, for the transcript

    def read(self, timeout: float) -> bytes:
        """What is waiting, at once; else wait up to `timeout` s for some. b"": nothing came."""
        n = self.serial.in_waiting
        if n <= 0 and timeout <= 0:
            return b""
        return self.serial.read(n if n > 0 else 1)

    def write(self, data: bytes, deadline: float) -> None:
        n = self.serial.write(data)  # (pyserial's write timeout, set at open)
        if n is not None and n != len(data):
            raise PortFailed(f"wrote {n} of {len(data)} bytes")

    def discard_input(self) -> None:
        self.serial.reset_input_buffer()

    def close(self) -> None:
        self.serial.close()


class _FdPort(Port):
    """A tty or a TCP socket: poll and read the descriptor, write it by the deadline."""

    gone = "the other end closed the connection"

    def __init__(self, ser: Any, fd: int) -> None:
        super().__init__(ser)
        self.fd = fd
        self._poller = select.poll()
        self._poller.register(fd, select.POLLIN)
        self._last_full = False

    def _read_now(self) -> bytes | None:
        try:
            return os.read(self.fd, READ_SIZE)
        except BlockingIOError:
            return None

    def read(self, timeout: float) -> bytes:
        # After a full read (a tty's 4 KiB line-discipline buffer, a socket's segment) more is
        # likely waiting: read at once; otherwise wait in poll first. Readable yet no data means
        # the tty hung up or the connection closed.
        data = self._read_now() if self._last_full else None
        if not data:
            if not self._poller.poll(max(0, math.ceil(timeout * 1000))):
                self._last_full = False
                return b""
            data = self._read_now()
            if data is None:
                return b""
            if not data:
                raise PortFailed(self.gone)
        self._last_full = len(data) >= 4000
        return data

    def write(self, data: bytes, deadline: float) -> None:
        write_by(self.fd, data, deadline)


class _TtyPort(_FdPort):
    kind = "tty"
    gone = "the tty reports readiness to read but returned no data (device disconnected or hung up)"


class _SocketSerial(protocol_socket.Serial):
    """pyserial's socket:// without the drain at open (it reads and drops what already arrived,
    and loops for as long as a server keeps sending)."""

    def reset_input_buffer(self) -> None:
        if getattr(self, "_opening", False):
            return
        super().reset_input_buffer()

    def open(self) -> None:
        self._opening = True
        try:
            super().open()
        finally:
            self._opening = False


class _SocketPort(_FdPort):
    kind = "socket"

    def discard_input(self) -> None:
        for _ in range(256):  # what is there now, not what a flooding server keeps sending
            if not self.read(0.0):
                break


class _Rfc2217Serial(rfc2217.Serial):
    """pyserial's RFC 2217 client, changed where it loses data, stalls or cannot be bounded.

    - The reader thread copies the runs of data between telnet commands into one buffer
      (harness/formats/telnet.py; its parent queued and parsed every byte in Python); `read_block`
      takes all of it at once. The buffer is bounded: past RX_BUFFER_MAX the reader stops taking
      from the socket, so a board that floods while nobody reads fills the network, not memory.
    - Opening sends no PURGE (the server would discard what the board said before we attached)
      and asks for no DTR/RTS change (the server raised both when it opened the device).
    - A SET_CONTROL the server does not acknowledge (flow control on a port that has none) is
      noted in `transport_notes`, not an error. Writes go through `Rfc2217Port.write`, by a deadline.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._rx = bytearray()
        self._rx_cond = threading.Condition()
        self._rx_end: str | None = None
        self._opening = False
        self.transport_notes: list[str] = []
        super().__init__(*args, **kwargs)

    def open(self) -> None:
        with self._rx_cond:
            self._rx.clear()
            self._rx_end = None
        self._opening = True
        try:
            super().open()
        finally:
            self._opening = False

    def reset_input_buffer(self) -> None:
        if self._opening:
            return
        super().reset_input_buffer()
        with self._rx_cond:
            self._rx.clear()
            self._rx_cond.notify_all()

    def reset_output_buffer(self) -> None:
        if not self._opening:
            super().reset_output_buffer()

    def _update_dtr_state(self) -> None:
        if self._opening:
            self.transport_notes.append("DTR not set at open (the console server raised it when it opened the port)")
            return
        super()._update_dtr_state()

    def _update_rts_state(self) -> None:
        if self._opening:
            self.transport_notes.append("RTS not set at open (the console server raised it when it opened the port)")
            return
        super()._update_rts_state()

    def rfc2217_set_control(self, value: bytes) -> None:
        item = self._rfc2217_options["control"]
        item.set(value)
        try:
            item.wait(self._network_timeout)
        except (serial.SerialException, ValueError) as e:
            self.transport_notes.append(f"the server did not take SET_CONTROL {value.hex()} ({e}); going on without it")

    @property
    def in_waiting(self) -> int:
        return len(self._rx)

    def read_block(self, timeout: float) -> bytes:
        """What was received (at most READ_SIZE bytes, as a tty read gives); else wait up to
        `timeout` s for some. b"": nothing came."""
        with self._rx_cond:
            if not self._rx and self._rx_end is None and timeout > 0:
                self._rx_cond.wait(timeout)
            if self._rx:
                data = bytes(self._rx[:READ_SIZE])
                del self._rx[:READ_SIZE]
                self._rx_cond.notify_all()
                return data
            if self._rx_end is not None:
                raise PortFailed(self._rx_end)
            return b""

    def read(self, size: int = 1) -> bytes:
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        out = bytearray()
        while len(out) < size:
            left = 3600.0 if deadline is None else deadline - time.monotonic()
            with self._rx_cond:
                if not self._rx and self._rx_end is None and left > 0:
                    self._rx_cond.wait(left)
                take = bytes(self._rx[: size - len(out)])
                del self._rx[: len(take)]
                self._rx_cond.notify_all()
            out += take
            if not take and (left <= 0 or self._rx_end is not None):
                break
        return bytes(out)

    def _deliver(self, data: bytes) -> None:
        with self._rx_cond:
            while len(self._rx) >= RX_BUFFER_MAX and self.is_open:
                self._rx_cond.wait(0.5)
            self._rx += data
            self._rx_cond.notify_all()

    def _telnet_read_loop(self) -> None:
        why = "the console server closed the connection"
        decoder = TelnetDecoder()
        try:
            while self.is_open:
                try:
                    data = self._socket.recv(READ_SIZE)
                except socket.timeout:
                    continue
                except OSError as e:
                    why = f"the connection failed: {e}"
                    break
                if not data:
                    break
                try:
                    payload, events = decoder.feed(data)
                except TelnetError as e:  # what came before the break is the board's, and kept
                    if e.data:
                        self._deliver(e.data)
                    raise
                if payload:
                    self._deliver(payload)
                for event in events:  # pyserial's own handlers answer them
                    if isinstance(event, Negotiation):
                        self._telnet_negotiate_option(bytes([event.command]), bytes([event.option]))
                    elif isinstance(event, Subnegotiation):
                        if event.payload:
                            self._telnet_process_subnegotiation(event.payload)
                    else:
                        self._telnet_process_command(bytes([event.command]))
        except Exception as e:  # a server that breaks the protocol ends the connection, with the reason
            why = f"the console server broke the telnet protocol: {type(e).__name__}: {e}"
        finally:
            with self._rx_cond:
                self._rx_end = why
                self._rx_cond.notify_all()


class _Rfc2217Port(Port):
    kind = "rfc2217"

    def read(self, timeout: float) -> bytes:
        return self.serial.read_block(timeout)

    def write(self, data: bytes, deadline: float) -> None:
        ser = self.serial
        if ser._socket is None:
            raise PortFailed("the connection is closed")
        # The reader thread answers telnet options through the same lock: wait for it by the deadline too.
        if not ser._write_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise PortTimeout(f"wrote 0 of {len(data)} bytes by the deadline (the telnet connection is busy)")
        try:
            write_by(ser._socket.fileno(), data.replace(rfc2217.IAC, rfc2217.IAC_DOUBLED), deadline)
        finally:
            ser._write_lock.release()

    def discard_input(self) -> None:
        self.serial.reset_input_buffer()


def open_port(url: str, *, baudrate: int, poll_interval: float, write_timeout: float,
              options: Mapping[str, Any] | None = None, flush_on_open: bool = False) -> Port:
    """Open `url` without discarding what is waiting (unless `flush_on_open`). Raises
    serial.SerialException, OSError or ValueError when it cannot be opened."""
    options = dict(options or {})
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme == "rfc2217":
        ser = _Rfc2217Serial(None, baudrate=baudrate, timeout=poll_interval, **options)
        ser.port = url
        ser.open()
        port: Port = _Rfc2217Port(ser)
        port.notes = ser.transport_notes  # (one list: what the client notes later is noted too)
    elif scheme == "socket":
        ser = _SocketSerial(None, baudrate=baudrate, timeout=poll_interval, **options)
        ser.port = url
        ser.open()
        port = _SocketPort(ser, ser._socket.fileno())
        port.notes.append("socket:// carries bytes only: the console server sets the line (baud rate, "
                          "parity); baudrate and serial_options are not sent")
    else:
        ser = serial.serial_for_url(url, do_not_open=True, baudrate=baudrate, timeout=poll_interval,
                                    write_timeout=write_timeout, **options)
        posix = type(ser).__module__ == "serial.serialposix"
        if posix:
            # pyserial's POSIX open() discards what the tty buffered (tcflush): keep it.
            ser._reset_input_buffer = lambda: None
        ser.open()
        ser.__dict__.pop("_reset_input_buffer", None)
        fd = getattr(ser, "fd", None)
        port = _TtyPort(ser, fd) if posix and isinstance(fd, int) else Port(ser)
    if flush_on_open:
        port.discard_input()
        port.notes.append("discarded what the port held at open (flush_on_open)")
    return port
