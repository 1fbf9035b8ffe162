"""Evaluates flags through the OpenFeature Python SDK and its OFREP provider (PyPI
openfeature-sdk, openfeature-provider-ofrep), as a Python service would.

    python ofrep_eval.py URL '[{"name": "a", "key": "flag", "type": "boolean", "default": false,
                               "context": {"targetingKey": "svc-1", "team": "platform"}}, ...]'

Prints {name: [value, reason, error code or null, bundleAgeSeconds or null]} as JSON.
"""

import json
import sys

from openfeature import api
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext

api.set_provider(OFREPProvider(sys.argv[1], timeout=5))
client = api.get_client()
getters = {
    "boolean": client.get_boolean_details,
    "string": client.get_string_details,
    "integer": client.get_integer_details,
    "float": client.get_float_details,
    "object": client.get_object_details,
}


def plain(enum):
    return enum and str(getattr(enum, "value", enum))


results = {}
for wanted in json.loads(sys.argv[2]):
    context = dict(wanted.get("context", {}))
    key = context.pop("targetingKey", None)
    details = getters[wanted["type"]](wanted["key"], wanted["default"], EvaluationContext(key, context))
    age = (details.flag_metadata or {}).get("bundleAgeSeconds")
    results[wanted["name"]] = [details.value, plain(details.reason), plain(details.error_code), age]
print(json.dumps(results))
