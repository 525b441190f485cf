"""
A stand-in for LiteLLM's CustomSecretManager base class, used by the tests only when `litellm`
itself is not importable (it cannot be installed here). It has the real class's constructor and
abstract methods (litellm/integrations/custom_secret_manager.py); nothing else of LiteLLM.
"""

from abc import ABC, abstractmethod


class CustomSecretManager(ABC):
    def __init__(self, secret_manager_name=None, **kwargs):
        self.secret_manager_name = secret_manager_name or "custom_secret_manager"

    @abstractmethod
    async def async_read_secret(self, secret_name, optional_params=None, timeout=None):
        pass

    @abstractmethod
    def sync_read_secret(self, secret_name, optional_params=None, timeout=None):
        pass

    async def async_write_secret(
        self, secret_name, secret_value, description=None, optional_params=None, timeout=None, tags=None
    ):
        raise NotImplementedError("write")

    async def async_delete_secret(self, secret_name, recovery_window_in_days=7, optional_params=None, timeout=None):
        raise NotImplementedError("delete")
