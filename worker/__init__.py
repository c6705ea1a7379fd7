"""The update worker: RabbitMQ in, Bitrix24 crm.item.update out, outcomes back."""

__all__: list[str] = []
