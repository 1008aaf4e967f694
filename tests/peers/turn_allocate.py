"""Asks a TURN server for a relay allocation with the given credential, using aioice's TURN
client (the one aiortc relays through), and prints one JSON object:

- `{"allocated": true, "relayed": [ip, port]}` when the server granted the allocation;
- `{"allocated": false, "code": 401, "reason": "Unauthorized"}` when it refused it (the STUN
  error code and reason), or `{"allocated": false, "code": null, "reason": "..."}` when it did not
  answer.

The URL is a `turn:`/`turns:` URL as the router hands out (`turn:127.0.0.1:3478?transport=tcp`).
A `turns:` server's certificate is checked against SSL_CERT_FILE (or the system's CAs).
Exit status 0 in both cases; anything else is a broken run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from aioice import stun, turn
from aiortc.rtcicetransport import parse_stun_turn_uri


async def allocate(url: str, username: str, credential: str, timeout: float) -> dict:
    parsed = parse_stun_turn_uri(url)
    try:
        transport, _ = await asyncio.wait_for(
            turn.create_turn_endpoint(
                asyncio.DatagramProtocol,
                server_addr=(parsed["host"], parsed["port"]),
                username=username,
                password=credential,
                ssl=parsed["scheme"] == "turns",
                transport=parsed["transport"],
            ),
            timeout,
        )
    except stun.TransactionFailed as error:
        code, reason = error.response.attributes.get("ERROR-CODE", (None, str(error)))
        return {"allocated": False, "code": code, "reason": reason}
    except (stun.TransactionTimeout, asyncio.TimeoutError, ConnectionError) as error:
        return {"allocated": False, "code": None, "reason": repr(error)}
    relayed = transport.get_extra_info("sockname")
    transport.close()
    await asyncio.sleep(0.1)  # lets the allocation's deletion go out
    return {"allocated": True, "relayed": list(relayed)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--username", required=True)
    parser.add_argument("--credential", required=True)
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args()
    result = asyncio.run(allocate(args.url, args.username, args.credential, args.timeout))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
