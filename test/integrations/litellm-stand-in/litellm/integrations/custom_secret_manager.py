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

    # BaseSecretManager's, as of base_secret_manager.py@19a802d (reference/litellm-stores-2026.md 8):
    # a rotation that keeps the name updates the value, which the base does not implement.
    async def async_update_secret_value(self, secret_name, secret_value, optional_params=None, timeout=None):
        raise NotImplementedError("update")

    async def async_rotate_secret(
        self, current_secret_name, new_secret_name, new_secret_value, optional_params=None, timeout=None
    ):
        if current_secret_name == new_secret_name:
            return await self.async_update_secret_value(new_secret_name, new_secret_value, optional_params, timeout)
        if await self.async_read_secret(current_secret_name, optional_params, timeout) is None:
            raise ValueError(f"Current secret {current_secret_name} not found")
        written = await self.async_write_secret(
            new_secret_name, new_secret_value, f"Rotated from {current_secret_name}", optional_params, timeout
        )
        if await self.async_read_secret(new_secret_name, optional_params, timeout) is None:
            raise ValueError("Failed to verify new secret")
        await self.async_delete_secret(current_secret_name, 7, optional_params, timeout)
        return written
