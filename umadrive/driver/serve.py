"""``umadrive serve``: connect to an MD engine and answer its force requests.

Exit status: 0 after EXIT or when the engine closes the connection between
steps; 1 when a request is refused, the peer breaks the protocol, or the backend
returns something that cannot be sent (nothing is sent in these cases); 2 for
bad command-line values.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from typing import TYPE_CHECKING

from umadrive.protocol.errors import ProtocolError, UnsendableReplyError
from umadrive.protocol.messages import DEFAULT_MAX_ATOMS

if TYPE_CHECKING:
    import ase

    from umadrive.driver.backend import Backend
    from umadrive.protocol.client import DriverConnection

log = logging.getLogger("umadrive.driver")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True,
                        help="'ase:emt' or 'ase:package.module:Class' (any ASE calculator)")
    parser.add_argument("--model-kwargs", default="{}", metavar="JSON",
                        help="keyword arguments for the calculator, as a JSON object")
    parser.add_argument("--structure", required=True, metavar="FILE",
                        help="template read with ase.io.read: species, atom order, periodicity")
    where = parser.add_argument_group("address (unix socket, or --host/--port for TCP)")
    where.add_argument("--unix", metavar="NAME", help="unix socket PREFIX+NAME")
    where.add_argument("--prefix", default="/tmp/ipi_", help="unix socket prefix (default %(default)s)")
    where.add_argument("--host", help="TCP host (default localhost when --port is given)")
    where.add_argument("--port", type=int, help="TCP port")
    parser.add_argument("--connect-timeout", type=float, default=60.0, metavar="S",
                        help="keep trying to connect for S seconds (default %(default)s)")
    parser.add_argument("--max-atoms", type=int, default=DEFAULT_MAX_ATOMS,
                        help="refuse requests announcing more atoms (default %(default)s)")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(format="umadrive serve: %(levelname)s: %(message)s", level=logging.INFO)
    # Heavy imports happen here, not in configure(), so `umadrive --help` stays fast.
    import ase.io

    from umadrive.driver.backend import make_backend
    from umadrive.protocol import connect

    if (args.unix is None) == (args.port is None):
        log.error("give exactly one address: --unix NAME, or --port P [--host H]")
        return 2
    try:
        model_kwargs = json.loads(args.model_kwargs)
    except json.JSONDecodeError as error:
        log.error("--model-kwargs %r is not JSON (%s); expected an object like '{\"a\": 1}'",
                  args.model_kwargs, error)
        return 2
    if not isinstance(model_kwargs, dict):
        log.error("--model-kwargs %r must be a JSON object", args.model_kwargs)
        return 2
    template = ase.io.read(args.structure)
    try:
        backend = make_backend(args.model, template, **model_kwargs)
        connection = connect(unix=args.unix, prefix=args.prefix, host=args.host, port=args.port,
                             timeout=args.connect_timeout, max_atoms=args.max_atoms)
    except ValueError as error:
        log.error("%s", error)
        return 2
    except ProtocolError as error:
        log.error("%s", error)
        return 1
    with connection:
        log.info("connected to %s; %d atoms from %s; model %s",
                 connection.peer, len(template), args.structure, backend.name)
        return serve_connection(connection, backend, template)


def serve_connection(connection: DriverConnection, backend: Backend, template: ase.Atoms) -> int:
    """Answers requests until the server ends the run. Returns the exit status."""
    from umadrive.driver.requests import RequestError, check_structure

    served = 0
    start = time.perf_counter()
    try:
        while (request := connection.next_request()) is not None:
            if served == 0 and request.batched:
                log.info("batched protocol, %d structures per request", len(request.structures))
            structures = [check_structure(s, template) for s in request.structures]
            connection.send_predictions(backend.compute(structures))
            served += 1
    except (RequestError, ProtocolError, UnsendableReplyError) as error:
        log.error("%s; stopping without answering", error)
        return 1
    elapsed = time.perf_counter() - start
    how = "sent EXIT" if connection.end_reason == "EXIT" else "closed the connection"
    log.info("%s %s after %d requests in %.1f s; exiting", connection.peer, how, served, elapsed)
    return 0
