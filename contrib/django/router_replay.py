"""Hand a read that tried to write back to the router.

On the read-only app, whose database is a follower, any write fails with
SQLSTATE 25006 (read_only_sql_transaction): a logout link that deletes the
session, a "mark as read", a last-seen update. This middleware notices that
error anywhere in the request, the session middleware's own save included,
and swaps the final response for an empty one carrying
"X-Router-Replay: primary": the router discards it and sends the request to
the primary, which writes.

Django turns exceptions into responses inside every middleware layer, so no
layer sees the exception itself, and a process_exception hook only replaces
the view's answer, not what the session middleware does after it. Hence a
database hook and a check of the final response, in the first middleware.
On the primary the error never happens and the middleware does nothing.
"""
from contextlib import ExitStack

from django.db import connections
from django.http import HttpResponse

READ_ONLY_SQL_TRANSACTION = "25006"


def _read_only_error(exc):
    while exc is not None:
        if getattr(exc, "pgcode", None) == READ_ONLY_SQL_TRANSACTION:
            return True
        exc = exc.__cause__
    return False


class RouterReplayMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        wrote = []

        def watch(execute, sql, params, many, context):
            try:
                return execute(sql, params, many, context)
            except Exception as exc:
                if _read_only_error(exc):
                    wrote.append(True)
                raise

        with ExitStack() as stack:
            for conn in connections.all():
                stack.enter_context(conn.execute_wrapper(watch))
            response = self.get_response(request)
        if wrote:
            response = HttpResponse(status=503)
            response["X-Router-Replay"] = "primary"
        return response
