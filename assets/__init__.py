# Who answers for the assets (shown in the UI and filterable), and how each is tagged: the layer
# it belongs to and whether it holds personal data (emails, names), for access reviews.
OWNERS = ["team:data-engineering"]
PERSONAL_DATA = {"personal_data": "yes"}


def layer(name: str, personal_data: bool = False) -> dict[str, str]:
    return {"layer": name, **(PERSONAL_DATA if personal_data else {})}
