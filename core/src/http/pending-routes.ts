/** Routes whose issues have not landed yet: they answer `501 not_supported`. */
import { NotSupported } from "../store-errors";
import type { Router } from "./router";

export function pendingRoutes(router: Router): void {
  router.route(
    {
      method: "all",
      path: "/v1/forward/{model_name}/{path}",
      summary: "Forward a request to a model's API with its stored key (not supported yet)",
      auth: true,
      errors: ["not_supported"],
      responses: {},
    },
    () => {
      throw new NotSupported("/v1/forward");
    },
  );
}
