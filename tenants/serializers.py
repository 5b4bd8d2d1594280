from rest_framework import serializers

from .models import Organization, User


class SignupInput(serializers.Serializer):
    email = serializers.EmailField(max_length=254)
    password = serializers.CharField(max_length=256, write_only=True, trim_whitespace=False)
    organization_name = serializers.CharField(max_length=200)
    full_name = serializers.CharField(max_length=200, required=False, default="", allow_blank=True)


class OrganizationOutput(serializers.ModelSerializer):
    class Meta:
        model = Organization
        fields = ["id", "name", "slug", "created_at"]
        read_only_fields = fields


class UserOutput(serializers.ModelSerializer):
    class Meta:
        model = User
        fields = ["id", "email", "full_name", "created_at"]
        read_only_fields = fields


class MeOutput(serializers.Serializer):
    user = UserOutput(allow_null=True, help_text="null when an API key is calling")
    organization = OrganizationOutput(allow_null=True)
    role = serializers.CharField(allow_null=True)
    permissions = serializers.ListField(child=serializers.CharField())


class ApiKeyCreateInput(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    scopes = serializers.ListField(child=serializers.CharField(max_length=40), allow_empty=False, max_length=40)
    expires_at = serializers.DateTimeField(required=False, allow_null=True, default=None)


class ApiKeyOutput(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    prefix = serializers.CharField(help_text="The key reads lode_sk_<prefix>_…")
    scopes = serializers.ListField(child=serializers.CharField())
    created_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField(allow_null=True)
    revoked_at = serializers.DateTimeField(allow_null=True)
    last_used_at = serializers.DateTimeField(allow_null=True)


class ApiKeyCreatedOutput(ApiKeyOutput):
    secret = serializers.CharField(help_text="The whole key. Shown once: it is not stored.")


class MemberOutput(serializers.Serializer):
    id = serializers.UUIDField()
    email = serializers.EmailField(source="user.email")
    full_name = serializers.CharField(source="user.full_name")
    role = serializers.CharField()
    created_at = serializers.DateTimeField()


class MemberUpdateInput(serializers.Serializer):
    role = serializers.CharField(max_length=20)


class InvitationCreateInput(serializers.Serializer):
    email = serializers.EmailField(max_length=254)
    role = serializers.CharField(max_length=20)


class InvitationOutput(serializers.Serializer):
    id = serializers.UUIDField()
    email = serializers.EmailField()
    role = serializers.CharField()
    created_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField()


class InvitationAcceptInput(serializers.Serializer):
    token = serializers.CharField(max_length=200)


class OrganizationSwitchInput(serializers.Serializer):
    organization_id = serializers.UUIDField()


class AuditEventOutput(serializers.Serializer):
    id = serializers.IntegerField()
    action = serializers.CharField()
    actor = serializers.CharField(source="actor_label")
    actor_api_key_id = serializers.UUIDField(allow_null=True)
    target_type = serializers.CharField()
    target_id = serializers.CharField()
    ip = serializers.IPAddressField(allow_null=True)
    data = serializers.JSONField()
    created_at = serializers.DateTimeField()
