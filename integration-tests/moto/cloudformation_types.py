"""CloudFormation resource types the pillars' stacks use and moto 5.2's CloudFormation does not
know, each created through the moto backend of its service, as CloudFormation would call the
service's API (AWS CloudFormation resource reference, "Return values" of each type):

- AWS::CloudWatch::Alarm, AWS::CloudWatch::CompositeAlarm: PutMetricAlarm / PutCompositeAlarm;
  Ref is the name, Arn the ARN. A math alarm's queries are kept by name only.
- AWS::CodeCommit::Repository: CreateRepository; Ref is the id, Arn, Name, CloneUrlHttp.
- AWS::Lambda::Url: CreateFunctionUrlConfig; FunctionUrl, FunctionArn.
- AWS::Lambda::EventInvokeConfig: PutFunctionEventInvokeConfig; Ref is the function's name.
- AWS::Scheduler::Schedule: CreateSchedule; Arn.
- AWS::SecretsManager::Secret: CreateSecret (GenerateSecretString made here); Ref is the ARN.
- AWS::SNS::TopicPolicy, AWS::SQS::QueuePolicy: the policy is set on each topic or queue.

And one fix: a FIFO queue without a QueueName gets a generated name ending in `.fifo`, as
CloudFormation makes it (moto's generated name is refused as a FIFO queue's).
"""

import json
import secrets
import string

from moto.awslambda.models import lambda_backends
from moto.cloudformation.exceptions import ValidationError
from moto.cloudwatch.models import cloudwatch_backends
from moto.codecommit.exceptions import RepositoryNameExistsException
from moto.codecommit.models import codecommit_backends
from moto.core.common_models import CloudFormationModel
from moto.scheduler.models import scheduler_backends
from moto.secretsmanager.models import secretsmanager_backends
from moto.sns.models import sns_backends
from moto.sqs.models import Queue, sqs_backends


class Created:
    """What the types below share: a resource made by `create(properties, name, account,
    region)`, which returns its physical id and attributes. (Each type subclasses
    CloudFormationModel itself: moto finds the types among its direct subclasses.)"""

    TYPE = ""
    NAME_PROPERTY = ""

    @classmethod
    def cloudformation_type(cls):
        return cls.TYPE

    @classmethod
    def cloudformation_name_type(cls):
        return cls.NAME_PROPERTY

    def __init__(self, physical_id, attributes):
        self.physical_id = physical_id
        self.attributes = attributes

    @property
    def physical_resource_id(self):
        return self.physical_id

    @classmethod
    def has_cfn_attr(cls, attr):
        return True

    def get_cfn_attribute(self, attribute_name):
        return self.attributes[attribute_name]

    @classmethod
    def create_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
        properties = cloudformation_json.get("Properties", {})
        name = properties.get(cls.NAME_PROPERTY) or resource_name
        return cls(*cls.create(properties, name, account_id, region_name))

    @classmethod
    def update_from_cloudformation_json(cls, original_resource, new_resource_name, cloudformation_json, account_id, region_name):
        return cls.create_from_cloudformation_json(new_resource_name, cloudformation_json, account_id, region_name)

    @classmethod
    def delete_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id, region_name):
        pass


def put_alarm(p, name, account_id, region_name, **metric):
    """PutMetricAlarm (or, with `rule`, PutCompositeAlarm) of an alarm's properties `p`."""
    # A composite alarm has none of a metric alarm's fields.
    unset = {
        "namespace": None,
        "metric_name": None,
        "comparison_operator": None,
        "evaluation_periods": None,
        "period": None,
        "threshold": None,
        "statistic": None,
        "dimensions": [],
    }
    alarm = cloudwatch_backends[account_id][region_name].put_metric_alarm(
        name=name,
        description=p.get("AlarmDescription"),
        alarm_actions=p.get("AlarmActions", []),
        ok_actions=p.get("OKActions", []),
        **{**unset, **metric},
    )
    return name, {"Arn": alarm.alarm_arn}


class MetricAlarm(Created, CloudFormationModel):
    __module__ = "moto.cloudwatch.models"  # moto's model registry files a model under its service
    TYPE = "AWS::CloudWatch::Alarm"
    NAME_PROPERTY = "AlarmName"

    @staticmethod
    def create(p, name, account_id, region_name):
        return put_alarm(
            p,
            name,
            account_id,
            region_name,
            namespace=p.get("Namespace"),
            metric_name=p.get("MetricName"),
            comparison_operator=p["ComparisonOperator"],
            evaluation_periods=int(p["EvaluationPeriods"]),
            period=int(p.get("Period", 60)),
            threshold=float(p.get("Threshold", 0)),
            statistic=p.get("Statistic"),
            dimensions=p.get("Dimensions", []),  # moto takes CloudFormation's Name/Value keys
            datapoints_to_alarm=p.get("DatapointsToAlarm"),
            treat_missing_data=p.get("TreatMissingData"),
        )


class CompositeAlarm(Created, CloudFormationModel):
    __module__ = "moto.cloudwatch.models"  # moto's model registry files a model under its service
    TYPE = "AWS::CloudWatch::CompositeAlarm"
    NAME_PROPERTY = "AlarmName"

    @staticmethod
    def create(p, name, account_id, region_name):
        return put_alarm(p, name, account_id, region_name, rule=p["AlarmRule"])


class CodeCommitRepository(Created, CloudFormationModel):
    __module__ = "moto.codecommit.models"  # moto's model registry files a model under its service
    TYPE = "AWS::CodeCommit::Repository"
    NAME_PROPERTY = "RepositoryName"

    @staticmethod
    def create(p, name, account_id, region_name):
        backend = codecommit_backends[account_id][region_name]
        # As CloudFormation: an existing name fails the resource ("already exists"), told in
        # CloudFormation's error format, not CodeCommit's.
        try:
            backend.create_repository(name, p.get("RepositoryDescription", ""))
        except RepositoryNameExistsException as exists:
            raise ValidationError(message=f"{name} already exists in stack: {exists.message}") from exists
        metadata = backend.repositories[name].repository_metadata
        attributes = {
            "Arn": metadata["Arn"],
            "Name": name,
            "CloneUrlHttp": metadata["cloneUrlHttp"],
            "CloneUrlSsh": metadata["cloneUrlSsh"],
        }
        return metadata["repositoryId"], attributes


class FunctionUrl(Created, CloudFormationModel):
    __module__ = "moto.awslambda.models"  # moto's model registry files a model under its service
    TYPE = "AWS::Lambda::Url"
    NAME_PROPERTY = ""

    @staticmethod
    def create(p, name, account_id, region_name):
        config = {"AuthType": p["AuthType"], "Cors": p.get("Cors", {})}
        url = lambda_backends[account_id][region_name].create_function_url_config(p["TargetFunctionArn"], config)
        arn = url.function.function_arn
        return arn, {"FunctionUrl": url.url, "FunctionArn": arn}


class EventInvokeConfig(Created, CloudFormationModel):
    __module__ = "moto.awslambda.models"  # moto's model registry files a model under its service
    TYPE = "AWS::Lambda::EventInvokeConfig"
    NAME_PROPERTY = ""

    @staticmethod
    def create(p, name, account_id, region_name):
        config = {k: int(p[k]) for k in ("MaximumRetryAttempts", "MaximumEventAgeInSeconds") if k in p}
        if "DestinationConfig" in p:
            config["DestinationConfig"] = p["DestinationConfig"]
        lambda_backends[account_id][region_name].put_function_event_invoke_config(p["FunctionName"], config)
        return p["FunctionName"], {}


class Schedule(Created, CloudFormationModel):
    __module__ = "moto.scheduler.models"  # moto's model registry files a model under its service
    TYPE = "AWS::Scheduler::Schedule"
    NAME_PROPERTY = "Name"

    @staticmethod
    def create(p, name, account_id, region_name):
        schedule = scheduler_backends[account_id][region_name].create_schedule(
            description=p.get("Description"),
            end_date=p.get("EndDate"),
            flexible_time_window=p["FlexibleTimeWindow"],
            group_name=p.get("GroupName"),
            kms_key_arn=p.get("KmsKeyArn"),
            name=name,
            schedule_expression=p["ScheduleExpression"],
            schedule_expression_timezone=p.get("ScheduleExpressionTimezone"),
            start_date=p.get("StartDate"),
            state=p.get("State", "ENABLED"),
            target=p["Target"],
            action_after_completion=None,
        )
        return name, {"Arn": schedule.arn}


class Secret(Created, CloudFormationModel):
    __module__ = "moto.secretsmanager.models"  # moto's model registry files a model under its service
    TYPE = "AWS::SecretsManager::Secret"
    NAME_PROPERTY = "Name"

    @staticmethod
    def create(p, name, account_id, region_name):
        value = p.get("SecretString")
        if value is None:
            spec = p.get("GenerateSecretString", {})
            alphabet = string.ascii_letters + string.digits
            if not spec.get("ExcludePunctuation"):
                alphabet += string.punctuation
            value = "".join(secrets.choice(alphabet) for _ in range(int(spec.get("PasswordLength", 32))))
        created = secretsmanager_backends[account_id][region_name].create_secret(
            name=name,
            secret_string=value,
            secret_binary=None,
            description=p.get("Description"),
            tags=p.get("Tags", []),
            kms_key_id=p.get("KmsKeyId"),
            client_request_token=None,
            replica_regions=[],
            force_overwrite=False,
        )
        arn = json.loads(created)["ARN"]
        return arn, {"Id": arn}


class TopicPolicy(Created, CloudFormationModel):
    __module__ = "moto.sns.models"  # moto's model registry files a model under its service
    TYPE = "AWS::SNS::TopicPolicy"
    NAME_PROPERTY = ""

    @staticmethod
    def create(p, name, account_id, region_name):
        backend = sns_backends[account_id][region_name]
        for arn in p["Topics"]:
            backend.set_topic_attribute(arn, "Policy", json.dumps(p["PolicyDocument"]))
        return name, {"Id": name}


class QueuePolicy(Created, CloudFormationModel):
    __module__ = "moto.sqs.models"  # moto's model registry files a model under its service
    TYPE = "AWS::SQS::QueuePolicy"
    NAME_PROPERTY = ""

    @staticmethod
    def create(p, name, account_id, region_name):
        backend = sqs_backends[account_id][region_name]
        for url in p["Queues"]:
            queue_name = url.rstrip("/").rsplit("/", 1)[-1]
            backend.set_queue_attributes(queue_name, {"Policy": json.dumps(p["PolicyDocument"])})
        return name, {"Id": name}


def _fifo_names_end_in_fifo(create):
    def named(resource_name, cloudformation_json, account_id, region_name, **kwargs):
        fifo = str(cloudformation_json.get("Properties", {}).get("FifoQueue", "")).lower() == "true"
        if fifo and not str(resource_name).endswith(".fifo"):
            resource_name = f"{str(resource_name)[:75]}.fifo"
        return create(resource_name, cloudformation_json, account_id, region_name, **kwargs)

    return classmethod(lambda cls, *args, **kwargs: named(*args, **kwargs))


Queue.create_from_cloudformation_json = _fifo_names_end_in_fifo(Queue.create_from_cloudformation_json)
