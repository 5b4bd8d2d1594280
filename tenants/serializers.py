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
