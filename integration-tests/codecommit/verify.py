"""The CodeCommit stand-in's password check, with botocore's signer as git-remote-codecommit
uses it (git_remote_codecommit.sign: a GIT request, the canonical request
'GIT\n<path>\n\nhost:<host>\n\nhost\n', SigV4Auth for service 'codecommit'), so that the
passwords `pillar git-credential` makes are judged by an implementation not ours.

One JSON request a line on standard input: {"secret", "region", "host", "path", "timestamp"}
(timestamp as in the password, %Y%m%dT%H%M%S); one line out: the password expected.
"""
import json
import sys

import botocore.auth
import botocore.awsrequest
import botocore.credentials

for line in sys.stdin:
    asked = json.loads(line)
    credentials = botocore.credentials.Credentials("unused-for-the-signature", asked["secret"])
    request = botocore.awsrequest.AWSRequest()
    request.method = "GIT"
    request.url = "https://{}{}".format(asked["host"], asked["path"])
    request.context["timestamp"] = asked["timestamp"]
    signer = botocore.auth.SigV4Auth(credentials, "codecommit", asked["region"])
    canonical_request = "GIT\n{}\n\nhost:{}\n\nhost\n".format(asked["path"], asked["host"])
    signature = signer.signature(signer.string_to_sign(request, canonical_request), request)
    sys.stdout.write("{}Z{}\n".format(asked["timestamp"], signature))
    sys.stdout.flush()
