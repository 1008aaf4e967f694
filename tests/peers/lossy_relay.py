"""A UDP relay between one WebRTC peer and a server's media port that loses RTP
packets on purpose, and reports what the peers did about it.

The relay tells packets apart as RFC 7983 does (STUN, DTLS, RTP/RTCP) and reads
the parts of SRTP and SRTCP that stay in clear text: the RTP sequence number and
SSRC, the RTCP packet type. It never drops STUN, DTLS (the data channel) or RTCP,
and never drops the same RTP packet twice, so a retransmission always arrives.

To route a connection through it, the server's answer must name the relay's port
instead of its own (`route_answer`), and the offer must carry no candidates
(`strip_candidates`): the server then learns the peer's address from the relay's
connectivity checks only, and cannot reach the peer around the relay.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field

RTCP_RTPFB = 205
RTPFB_GENERIC_NACK = 1


@dataclass
class Direction:
    """What one direction of the relay carried."""

    rtp_packets: int = 0
    # (SSRC, sequence number) of each RTP packet dropped once.
    dropped: set = field(default_factory=set)
    # Dropped packets that were sent again and passed.
    retransmitted: set = field(default_factory=set)
    # Generic NACKs (RTPFB, FMT 1) carried, asking the other side to resend.
    nacks: int = 0

    def observe(self, packet: bytes, dropping: bool, drop_every: int) -> bool:
        """Counts `packet`; True when it passes."""
        if len(packet) < 12 or not 128 <= packet[0] <= 191:
            return True  # STUN, DTLS or something else: always passes
        packet_type = packet[1]
        if 192 <= packet_type <= 223:
            if packet_type == RTCP_RTPFB and packet[0] & 0x1F == RTPFB_GENERIC_NACK:
                self.nacks += 1
            return True
        key = (int.from_bytes(packet[8:12], "big"), int.from_bytes(packet[2:4], "big"))
        self.rtp_packets += 1
        if key in self.dropped:
            self.retransmitted.add(key)
            return True
        if dropping and self.rtp_packets % drop_every == 0:
            self.dropped.add(key)
            return False
        return True


class _Side(asyncio.DatagramProtocol):
    def __init__(self, on_packet) -> None:
        self.on_packet = on_packet
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        self.on_packet(data, addr)


class LossyRelay:
    """Relays one peer to one server port on 127.0.0.1, dropping every
    `drop_every`-th RTP packet in each direction while `dropping` is set."""

    def __init__(self, drop_every: int = 20) -> None:
        self.drop_every = drop_every
        self.dropping = False
        self.to_server = Direction()
        self.to_client = Direction()
        self.server_address: tuple[str, int] | None = None
        self._client_address = None
        self._client_side: _Side | None = None
        self._server_side: _Side | None = None

    async def start(self, server_port: int) -> int:
        """Starts relaying to `server_port`; returns the port the peer should use."""
        loop = asyncio.get_running_loop()
        self.server_address = ("127.0.0.1", server_port)
        _, self._client_side = await loop.create_datagram_endpoint(
            lambda: _Side(self._from_client), local_addr=("127.0.0.1", 0)
        )
        _, self._server_side = await loop.create_datagram_endpoint(
            lambda: _Side(self._from_server), local_addr=("127.0.0.1", 0)
        )
        return self._client_side.transport.get_extra_info("sockname")[1]

    def _from_client(self, data: bytes, addr) -> None:
        self._client_address = addr
        if self.to_server.observe(data, self.dropping, self.drop_every):
            self._server_side.transport.sendto(data, self.server_address)

    def _from_server(self, data: bytes, addr) -> None:
        if addr != self.server_address or self._client_address is None:
            return
        if self.to_client.observe(data, self.dropping, self.drop_every):
            self._client_side.transport.sendto(data, self._client_address)

    async def route_answer(self, sdp: str) -> str:
        """Starts the relay for the answer's UDP host candidate and names the relay's
        port in its place."""
        pattern = re.compile(r"^(a=candidate:\S+ \d+ udp \d+ 127\.0\.0\.1 )(\d+)( typ host.*)$",
                             re.IGNORECASE | re.MULTILINE)
        found = pattern.search(sdp)
        assert found, f"the answer has no UDP host candidate on 127.0.0.1:\n{sdp}"
        port = await self.start(int(found.group(2)))
        return pattern.sub(lambda m: f"{m.group(1)}{port}{m.group(3)}", sdp)

    def close(self) -> None:
        for side in (self._client_side, self._server_side):
            if side is not None and side.transport is not None:
                side.transport.close()


def strip_candidates(sdp: str) -> str:
    """The SDP without its `a=candidate` lines."""
    return "".join(line for line in sdp.splitlines(keepends=True) if not line.startswith("a=candidate:"))
