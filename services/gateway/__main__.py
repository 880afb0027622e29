import os

import uvicorn

if __name__ == "__main__":
    uvicorn.run("services.gateway.app:app", host=os.environ.get("CLUSTERFLOW_GATEWAY_HOST", "127.0.0.1"),
                port=int(os.environ.get("CLUSTERFLOW_GATEWAY_PORT", "8000")))
